package tunnel

import (
	"io"
	"net"
	"os"
	"strings"
	"testing"
)

// TestMain lets the benchmarks re-execute the test binary as a plain TCP
// relay (TUNNEL_BENCH_RELAY=LISTEN,TARGET): two such processes in a row are
// the cheapest possible two-hop relay, the floor the tunnel's CPU cost is
// compared with in BenchmarkBulk.
func TestMain(m *testing.M) {
	if spec := os.Getenv("TUNNEL_BENCH_RELAY"); spec != "" {
		listen, target, _ := strings.Cut(spec, ",")
		runRelay(listen, target)
		return
	}
	os.Exit(m.Run())
}

// runRelay forwards each connection to target with read/write copies
// through 256 KiB buffers (no splice, like the tunnel), half-close included.
func runRelay(listen, target string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				return
			}
			done := make(chan struct{})
			go func() {
				_, _ = io.CopyBuffer(struct{ io.Writer }{u}, struct{ io.Reader }{c}, make([]byte, 256<<10))
				_ = u.(*net.TCPConn).CloseWrite()
				close(done)
			}()
			_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{u}, make([]byte, 256<<10))
			_ = c.(*net.TCPConn).CloseWrite()
			<-done
			c.Close()
			u.Close()
		}()
	}
}
