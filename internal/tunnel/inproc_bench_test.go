package tunnel

import (
	"io"
	"testing"
	"time"
)

// BenchmarkInProcessUpload runs server, client and upstream in the test
// process (for profiling with -cpuprofile); the process-level figures are in
// BenchmarkBulk.
func BenchmarkInProcessUpload(b *testing.B) {
	up := startBenchUpstreams(b)
	scfg := serverConfig("sink")
	scfg.Session = DefaultServerConfig().Session
	s := startServer(b, scfg)
	ccfg := clientConfig(s, map[string]string{"sink": up.sink})
	ccfg.Session = scfg.Session
	c, _ := startClient(b, ccfg)
	waitFor(b, "ready", 5*time.Second, c.Ready)
	const size = 64 * mib
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		upload(b, s.ListenerAddr("sink"), size)
	}
}

// BenchmarkInProcessNewConns: connect, 64-byte echo, close, one at a time,
// with server, client and upstream in the test process (for -cpuprofile).
func BenchmarkInProcessNewConns(b *testing.B) {
	up := startBenchUpstreams(b)
	scfg := serverConfig("echo")
	scfg.Session = DefaultServerConfig().Session
	s := startServer(b, scfg)
	ccfg := clientConfig(s, map[string]string{"echo": up.echo})
	ccfg.Session = scfg.Session
	c, _ := startClient(b, ccfg)
	waitFor(b, "ready", 5*time.Second, c.Ready)
	msg, got := make([]byte, 64), make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := mustDial(b, s.ListenerAddr("echo"))
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
		_ = c.SetLinger(0)
		c.Close()
	}
}
