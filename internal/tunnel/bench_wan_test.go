package tunnel

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/internal/delayline"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
)

// The WAN benchmark (issue 11): the tunnel across a long path, against direct
// TCP across the same path, in the same run. A delay line (internal/delayline:
// a relay adding a fixed latency each way, no bandwidth limit) sits between
// the `tunnel client` process and the `tunnel server` process, and an
// identical one between the benchmark's direct dialer and each upstream.
// Transfers run for a fixed time instead of a fixed size: a warm-up
// (TUNNEL_WAN_WARMUP, default 2 s; its rate is reported as the ramp) and
// then a measured window (TUNNEL_WAN_WINDOW, default 3 s) whose bytes,
// counted where they arrive, give the steady rate. TUNNEL_WAN_RTTS lists the
// round trips (default "0s,50ms,100ms": 0s runs the same delay line without
// delay, the CPU-bound ceiling of this machine that the other ratios are
// read against).

// wanUpstreams are the home-side services of the WAN benchmark.
type wanUpstreams struct {
	sink, source, echo string
	// sinkCount is where new sink connections count their bytes; a
	// measurement installs its own counter, so the tail of an earlier
	// transfer cannot leak into it.
	sinkCount atomic.Pointer[atomic.Int64]
}

// startWANUpstreams: sink reads and counts until the connection ends;
// source writes until the connection ends; echo echoes.
func startWANUpstreams(b *testing.B) *wanUpstreams {
	up := &wanUpstreams{}
	up.sinkCount.Store(new(atomic.Int64))
	up.sink = testsupport.Serve(b, func(c net.Conn) {
		n := up.sinkCount.Load()
		buf := make([]byte, 256<<10)
		for {
			m, err := c.Read(buf)
			n.Add(int64(m))
			if err != nil {
				return
			}
		}
	})
	up.source = testsupport.Serve(b, func(c net.Conn) {
		for {
			if _, err := c.Write(benchBuf); err != nil {
				return
			}
		}
	})
	up.echo = testsupport.Serve(b, func(c net.Conn) {
		_, _ = io.CopyBuffer(c, struct{ io.Reader }{c}, make([]byte, 32<<10))
	})
	return up
}

// wanRate is one timed transfer's result: MiB/s during the warm-up and
// during the window, and (through the tunnel) the CPU share the server and
// the client used during the window (1 = one core; with the default
// --max-procs 1 a process near 1 is CPU-bound, not window-bound).
//
// runqWait is how long the two processes' threads waited for a CPU while
// runnable, per second (from /proc/PID/task/*/schedstat): well above 0, the
// shared machine starved the tunnel and its figure says little about its
// flow control.
type wanRate struct{ ramp, steady, srvCPU, cliCPU, runqWait float64 }

// runqSeconds sums the run-queue wait of every thread of the server and
// client processes, in seconds.
func (bt *benchTunnel) runqSeconds() float64 {
	total := 0.0
	for _, c := range []*exec.Cmd{bt.srv, bt.cli} {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", c.Process.Pid))
		for _, p := range tasks {
			raw, err := os.ReadFile(p)
			if err != nil {
				continue // the thread is gone
			}
			if f := strings.Fields(string(raw)); len(f) >= 2 {
				ns, _ := strconv.ParseFloat(f[1], 64)
				total += ns / 1e9
			}
		}
	}
	return total
}

// wanTransfer runs streams parallel transfers to addr (uploads to the sink
// or downloads from the source) for warm+window and returns the rates; bt,
// if not nil, is the tunnel whose CPU is sampled. The connections are reset
// at the end.
func wanTransfer(b *testing.B, up *wanUpstreams, addr string, bt *benchTunnel, upload bool, streams int, warm, window time.Duration) wanRate {
	count := new(atomic.Int64)
	if upload {
		up.sinkCount.Store(count)
	}
	conns := make([]*net.TCPConn, streams)
	for i := range conns {
		conns[i] = mustDial(b, addr)
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, c := range conns {
		wg.Go(func() {
			if upload {
				for {
					if _, err := c.Write(benchBuf); err != nil {
						return
					}
				}
			}
			buf := make([]byte, 256<<10)
			for {
				n, err := c.Read(buf)
				count.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
	}
	var s1, c1, q1, s2, c2, q2 float64
	time.Sleep(warm)
	t1, n1 := time.Now(), count.Load()
	if bt != nil {
		s1, c1 = bt.procCPU(b)
		q1 = bt.runqSeconds()
	}
	time.Sleep(window)
	t2, n2 := time.Now(), count.Load()
	if bt != nil {
		s2, c2 = bt.procCPU(b)
		q2 = bt.runqSeconds()
	}
	for _, c := range conns {
		_ = c.SetLinger(0)
		_ = c.Close()
	}
	wg.Wait()
	w := t2.Sub(t1).Seconds()
	return wanRate{
		ramp:   float64(n1) / mib / t1.Sub(t0).Seconds(),
		steady: float64(n2-n1) / mib / w,
		srvCPU: (s2 - s1) / w,
		cliCPU: (c2 - c1) / w,
		// A thread that ended in the window drops out of the sum; the
		// tunnel's long-lived threads dominate it.
		runqWait: max(q2-q1, 0) / w,
	}
}

// BenchmarkWAN: the tunnel vs direct TCP through the same delay line, at
// each round trip: one stream upload and download, 32 streams download
// (with the server+client peak RSS), and a new connection with a 64-byte
// echo (p50 over 20, connections alternating between the two paths).
func BenchmarkWAN(b *testing.B) {
	warm := testsupport.EnvDuration(b, "TUNNEL_WAN_WARMUP", 2*time.Second)
	window := testsupport.EnvDuration(b, "TUNNEL_WAN_WINDOW", 3*time.Second)
	rtts := "0s,50ms,100ms"
	if v := os.Getenv("TUNNEL_WAN_RTTS"); v != "" {
		rtts = v
	}
	for _, s := range strings.Split(rtts, ",") {
		rtt, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || rtt < 0 {
			b.Fatalf("TUNNEL_WAN_RTTS=%q: %q is not a duration", rtts, s)
		}
		b.Run("rtt="+rtt.String(), func(b *testing.B) { benchWAN(b, rtt, warm, window) })
	}
}

func benchWAN(b *testing.B, rtt, warm, window time.Duration) {
	up := startWANUpstreams(b)
	line := func(target string) string {
		r, err := delayline.Listen("127.0.0.1:0", target, delayline.Config{Delay: rtt / 2})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close() })
		return r.Addr()
	}
	bt := startTunnelProcs(b, map[string]string{"sink": up.sink, "source": up.source, "echo": up.echo}, line)
	direct := map[string]string{"sink": line(up.sink), "source": line(up.source), "echo": line(up.echo)}
	// Lets the tail of a reset transfer drain between measurements.
	pause := func() { time.Sleep(2*rtt + 200*time.Millisecond) }

	for _, tc := range []struct {
		name    string
		upload  bool
		streams int
	}{{"upload", true, 1}, {"download", false, 1}, {"download32", false, 32}} {
		b.Run(tc.name, func(b *testing.B) {
			key := "source"
			if tc.upload {
				key = "sink"
			}
			var tun, dir wanRate
			var peak float64
			for i := 0; i < b.N; i++ {
				d := wanTransfer(b, up, direct[key], nil, tc.upload, tc.streams, warm, window)
				pause()
				bt.resetPeakRSS()
				t := wanTransfer(b, up, bt.listeners[key], bt, tc.upload, tc.streams, warm, window)
				peak = max(peak, bt.statusKiB(b, "VmHWM")/1024)
				pause()
				tun.ramp, tun.steady = tun.ramp+t.ramp, tun.steady+t.steady
				tun.srvCPU, tun.cliCPU = tun.srvCPU+t.srvCPU, tun.cliCPU+t.cliCPU
				tun.runqWait += t.runqWait
				dir.ramp, dir.steady = dir.ramp+d.ramp, dir.steady+d.steady
			}
			n := float64(b.N)
			reportRatio(b, "MiB/s", tun.steady/n, dir.steady/n)
			b.ReportMetric(tun.ramp/n, "tunnel-ramp-MiB/s")
			b.ReportMetric(dir.ramp/n, "direct-ramp-MiB/s")
			b.ReportMetric(tun.srvCPU/n, "server-CPU")
			b.ReportMetric(tun.cliCPU/n, "client-CPU")
			b.ReportMetric(tun.runqWait/n, "tunnel-runq-wait")
			if tc.streams > 1 {
				b.ReportMetric(peak, "peak-RSS-MiB")
			}
		})
	}

	b.Run("connect-echo", func(b *testing.B) {
		const conns = 20
		var tun, dir []time.Duration
		for i := 0; i < b.N; i++ {
			for range conns {
				for _, p := range []struct {
					addr string
					lat  *[]time.Duration
				}{{direct["echo"], &dir}, {bt.listeners["echo"], &tun}} {
					d, err := freshEcho(p.addr, 10*time.Second)
					if err != nil {
						b.Fatalf("new connection + echo via %s: %v", p.addr, err)
					}
					*p.lat = append(*p.lat, d)
				}
			}
		}
		slices.Sort(tun)
		slices.Sort(dir)
		b.ReportMetric(ms(percentile(tun, 0.5)), "tunnel-p50-ms")
		b.ReportMetric(ms(percentile(dir, 0.5)), "direct-p50-ms")
		b.ReportMetric(ms(tun[len(tun)-1]), "tunnel-max-ms")
		b.ReportMetric(ms(dir[len(dir)-1]), "direct-max-ms")
		b.ReportMetric(ms(percentile(dir, 0.5))/ms(percentile(tun, 0.5)), "ratio-p50")
	})
}
