package tunnel

// Benchmarks of the real binary against direct TCP, measured in the same
// run (`make bench`). Each benchmark starts a fresh `tunnel server` and
// `tunnel client` process pair on loopback, with production defaults, and
// reports the tunnel figure, the direct-TCP figure and their ratio as
// custom metrics. The tunnel binary is $TUNNEL_BIN, or built from
// ./cmd/tunnel into a temporary directory.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
)

var (
	benchBinOnce sync.Once
	benchBin     string
	benchBinErr  error
)

func tunnelBinary(b *testing.B) string {
	benchBinOnce.Do(func() {
		if p := os.Getenv("TUNNEL_BIN"); p != "" {
			benchBin = p
			return
		}
		dir, err := os.MkdirTemp("", "tunnel-bench-")
		if err != nil {
			benchBinErr = err
			return
		}
		benchBin = filepath.Join(dir, "tunnel")
		benchBinErr = repo.GoBuild("./cmd/tunnel", benchBin)
	})
	if benchBinErr != nil {
		b.Fatal(benchBinErr)
	}
	return benchBin
}

// benchUpstreams are the home-side services, in the benchmark process.
type benchUpstreams struct {
	sink, source, echo string
}

// startBenchUpstreams: sink reads to EOF and answers with the byte count;
// source reads an 8-byte length and sends that many bytes; echo echoes.
func startBenchUpstreams(b *testing.B) benchUpstreams {
	sink := testsupport.Serve(b, func(c net.Conn) {
		buf := make([]byte, 128<<10)
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				break
			}
		}
		_ = binary.Write(c, binary.BigEndian, n)
	})
	source := testsupport.Serve(b, func(c net.Conn) {
		var n int64
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		buf := make([]byte, 128<<10)
		for n > 0 {
			m, err := c.Write(buf[:min(int64(len(buf)), n)])
			if err != nil {
				return
			}
			n -= int64(m)
		}
	})
	echoAddr := testsupport.Serve(b, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		_, _ = io.CopyBuffer(c, struct{ io.Reader }{c}, buf)
	})
	return benchUpstreams{sink: sink, source: source, echo: echoAddr}
}

type benchTunnel struct {
	srv, cli  *exec.Cmd
	listeners map[string]string // name -> server listener address
}

func freePort(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startBenchTunnel(b *testing.B, up benchUpstreams) *benchTunnel {
	return startTunnelProcs(b, map[string]string{"sink": up.sink, "source": up.source, "echo": up.echo}, nil)
}

// startTunnelProcs starts a server and a client process with one listener
// per upstream (name -> address). via, if set, is given the server's
// websocket address and returns the address the client dials instead (a
// delay line in front of the server).
func startTunnelProcs(b *testing.B, upstreams map[string]string, via func(serverAddr string) string) *benchTunnel {
	bin := tunnelBinary(b)
	listen, sAdmin, cAdmin := freePort(b), freePort(b), freePort(b)
	dialAddr := listen
	if via != nil {
		dialAddr = via(listen)
	}
	bt := &benchTunnel{listeners: map[string]string{}}
	sargs := []string{"server", "--listen", listen, "--admin-addr", sAdmin, "--log-level", "warn"}
	// The client logs only errors: the benchmark kills the processes at
	// the end, which a client rightly warns about.
	cargs := []string{"client", "--server", "ws://" + dialAddr + TunnelPath, "--admin-addr", cAdmin, "--log-level", "error"}
	for name, addr := range upstreams {
		bt.listeners[name] = freePort(b)
		sargs = append(sargs, "--port", name+"="+bt.listeners[name])
		cargs = append(cargs, "--upstream", name+"="+addr)
	}
	// TUNNEL_BENCH_ARGS adds flags to both processes (tuning experiments).
	extra := strings.Fields(os.Getenv("TUNNEL_BENCH_ARGS"))
	sargs, cargs = append(sargs, extra...), append(cargs, extra...)
	env := append(os.Environ(), "TUNNEL_TOKEN=bench-token")
	if p := os.Getenv("TUNNEL_BENCH_PROCS"); p != "" {
		env = append(env, "GOMAXPROCS="+p)
	}
	bt.srv = exec.Command(bin, sargs...)
	bt.cli = exec.Command(bin, cargs...)
	b.Cleanup(func() {
		for _, c := range []*exec.Cmd{bt.cli, bt.srv} {
			if c.Process != nil {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for _, step := range []struct {
		c     *exec.Cmd
		ready string
	}{{bt.srv, "http://" + sAdmin + "/healthz"}, {bt.cli, "http://" + sAdmin + "/readyz"}} {
		step.c.Env = env
		step.c.Stderr = os.Stderr
		if err := step.c.Start(); err != nil {
			b.Fatal(err)
		}
		for httpStatus(b, step.ready) != 200 {
			if time.Now().After(deadline) {
				b.Fatal("tunnel not ready")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for httpStatus(b, "http://"+sAdmin+"/readyz") != 200 {
		if time.Now().After(deadline) {
			b.Fatal("tunnel not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return bt
}

// startRelayPair runs two plain relay processes (see TestMain) in front of
// target and returns the first one's address.
func startRelayPair(b *testing.B, target string) (string, *benchTunnel) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	a1, a2 := freePort(b), freePort(b)
	rp := &benchTunnel{}
	rp.srv = exec.Command(exe)
	rp.srv.Env = append(os.Environ(), "TUNNEL_BENCH_RELAY="+a1+","+a2)
	rp.cli = exec.Command(exe)
	rp.cli.Env = append(os.Environ(), "TUNNEL_BENCH_RELAY="+a2+","+target)
	if p := os.Getenv("TUNNEL_BENCH_PROCS"); p != "" {
		rp.srv.Env = append(rp.srv.Env, "GOMAXPROCS="+p)
		rp.cli.Env = append(rp.cli.Env, "GOMAXPROCS="+p)
	}
	b.Cleanup(func() {
		for _, c := range []*exec.Cmd{rp.srv, rp.cli} {
			if c.Process != nil {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
		}
	})
	for _, c := range []*exec.Cmd{rp.cli, rp.srv} {
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", a1); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("relay not listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return a1, rp
}

// cpuSeconds is utime+stime of the server and client processes.
func (bt *benchTunnel) cpuSeconds(b *testing.B) float64 {
	srv, cli := bt.procCPU(b)
	return srv + cli
}

// procCPU is utime+stime of the server and of the client, in seconds.
func (bt *benchTunnel) procCPU(b *testing.B) (srv, cli float64) {
	var secs [2]float64
	for i, c := range []*exec.Cmd{bt.srv, bt.cli} {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		s := string(raw)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ut, _ := strconv.ParseFloat(fields[11], 64)
		st, _ := strconv.ParseFloat(fields[12], 64)
		secs[i] = (ut + st) / 100 // USER_HZ
	}
	return secs[0], secs[1]
}

// statusKiB reads a VmXXX line of /proc/PID/status for both processes, summed.
func (bt *benchTunnel) statusKiB(b *testing.B, key string) float64 {
	total := 0.0
	for _, c := range []*exec.Cmd{bt.srv, bt.cli} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
				kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
				total += kb
			}
		}
		f.Close()
	}
	return total
}

// resetPeakRSS makes VmHWM start again from the current RSS.
func (bt *benchTunnel) resetPeakRSS() {
	for _, c := range []*exec.Cmd{bt.srv, bt.cli} {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", c.Process.Pid), []byte("5"), 0)
	}
}

func mustDial(b *testing.B, addr string) *net.TCPConn {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	return c.(*net.TCPConn)
}

var benchBuf = make([]byte, 128<<10)

// upload sends n bytes to a sink and waits for its byte count.
func upload(b *testing.B, addr string, n int64) {
	c := mustDial(b, addr)
	defer c.Close()
	for left := n; left > 0; {
		m, err := c.Write(benchBuf[:min(int64(len(benchBuf)), left)])
		if err != nil {
			b.Fatal(err)
		}
		left -= int64(m)
	}
	_ = c.CloseWrite()
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil || got != n {
		b.Fatalf("sink got %d of %d bytes: %v", got, n, err)
	}
}

// download asks a source for n bytes and reads them.
func download(b *testing.B, addr string, n int64) {
	c := mustDial(b, addr)
	defer c.Close()
	_ = binary.Write(c, binary.BigEndian, n)
	buf := make([]byte, 128<<10)
	got, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf)
	if err != nil || got != n {
		b.Fatalf("source sent %d of %d bytes: %v", got, n, err)
	}
}

const mib = 1 << 20

func reportRatio(b *testing.B, unit string, tunnel, direct float64) {
	b.ReportMetric(tunnel, "tunnel-"+unit)
	b.ReportMetric(direct, "direct-"+unit)
	b.ReportMetric(tunnel/direct, "ratio")
}

// BenchmarkBulk: one stream moving 256 MiB per iteration, upload (caller to
// home service) and download, tunnel vs direct. Also reports tunnel CPU
// seconds (server+client) per GiB, and for scale the same figures for a
// pair of plain TCP relay processes (the cheapest two-hop relay) and the
// CPU the two ends of a direct connection spend.
func BenchmarkBulk(b *testing.B) {
	const size = 256 * mib
	up := startBenchUpstreams(b)
	bt := startBenchTunnel(b, up)
	for _, dir := range []struct {
		name string
		f    func(*testing.B, string, int64)
		key  string
	}{{"upload", upload, "sink"}, {"download", download, "source"}} {
		b.Run(dir.name, func(b *testing.B) {
			target := map[string]string{"sink": up.sink, "source": up.source}[dir.key]
			relay, rp := startRelayPair(b, target)
			dir.f(b, bt.listeners[dir.key], 8*mib) // warm up
			dir.f(b, relay, 8*mib)
			var tDirect, tTunnel, tRelay time.Duration
			var cpu, cpuDirect, cpuRelay float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start, r0 := time.Now(), selfCPU()
				dir.f(b, target, size)
				tDirect += time.Since(start)
				cpuDirect += selfCPU() - r0

				c0 := bt.cpuSeconds(b)
				start = time.Now()
				dir.f(b, bt.listeners[dir.key], size)
				tTunnel += time.Since(start)
				cpu += bt.cpuSeconds(b) - c0

				c0 = rp.cpuSeconds(b)
				start = time.Now()
				dir.f(b, relay, size)
				tRelay += time.Since(start)
				cpuRelay += rp.cpuSeconds(b) - c0
			}
			total := float64(b.N) * size / mib
			gib := total / 1024
			reportRatio(b, "MiB/s", total/tTunnel.Seconds(), total/tDirect.Seconds())
			b.ReportMetric(cpu/gib, "tunnel-CPU-s/GiB")
			b.ReportMetric(total/tRelay.Seconds(), "relay-MiB/s")
			b.ReportMetric(cpuRelay/gib, "relay-CPU-s/GiB")
			b.ReportMetric(cpuDirect/gib, "direct-CPU-s/GiB")
		})
	}
}

// BenchmarkParallel32: 32 streams uploading 16 MiB each at once; aggregate
// throughput, tunnel vs direct, and peak RSS of server+client.
func BenchmarkParallel32(b *testing.B) {
	const streams, each = 32, 16 * mib
	up := startBenchUpstreams(b)
	bt := startBenchTunnel(b, up)
	run := func(addr string) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for i := 0; i < streams; i++ {
			wg.Go(func() { upload(b, addr, each) })
		}
		wg.Wait()
		return time.Since(start)
	}
	run(bt.listeners["sink"])
	bt.resetPeakRSS()
	var tDirect, tTunnel time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tDirect += run(up.sink)
		tTunnel += run(bt.listeners["sink"])
	}
	total := float64(b.N) * streams * each / mib
	reportRatio(b, "MiB/s", total/tTunnel.Seconds(), total/tDirect.Seconds())
	b.ReportMetric(bt.statusKiB(b, "VmHWM")/1024, "peak-RSS-MiB")
}

// BenchmarkEcho64: 64-byte request/response on one open connection;
// p50 and p99 round trip, tunnel vs direct.
func BenchmarkEcho64(b *testing.B) {
	const rounds = 5000
	up := startBenchUpstreams(b)
	bt := startBenchTunnel(b, up)
	measure := func(addr string) []time.Duration {
		c := mustDial(b, addr)
		defer c.Close()
		msg, got := make([]byte, 64), make([]byte, 64)
		lat := make([]time.Duration, 0, rounds)
		for i := 0; i < rounds+200; i++ {
			start := time.Now()
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			if i >= 200 { // skip warm-up
				lat = append(lat, time.Since(start))
			}
		}
		slices.Sort(lat)
		return lat
	}
	var direct, tunnel []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		direct = append(direct, measure(up.echo)...)
		tunnel = append(tunnel, measure(bt.listeners["echo"])...)
	}
	slices.Sort(direct)
	slices.Sort(tunnel)
	pct := func(l []time.Duration, p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Microseconds()) }
	b.ReportMetric(pct(tunnel, 0.50), "tunnel-p50-µs")
	b.ReportMetric(pct(tunnel, 0.99), "tunnel-p99-µs")
	b.ReportMetric(pct(direct, 0.50), "direct-p50-µs")
	b.ReportMetric(pct(direct, 0.99), "direct-p99-µs")
	b.ReportMetric(pct(direct, 0.50)/pct(tunnel, 0.50), "ratio-p50")
}

// BenchmarkNewConns: one dialer process opens connections (connect, 64-byte
// echo, close), 2000 per iteration: connections/s, tunnel vs direct. The
// "sequential" variant has one connection in flight at a time; "parallel8"
// keeps eight in flight (the same dialer, eight goroutines). It also reports
// the CPU time server+client spend per connection.
func BenchmarkNewConns(b *testing.B) {
	const conns = 2000
	up := startBenchUpstreams(b)
	bt := startBenchTunnel(b, up)
	one := func(addr string) {
		msg, got := make([]byte, 64), make([]byte, 64)
		c := mustDial(b, addr)
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
		_ = c.SetLinger(0) // avoid piling up TIME_WAIT on the loopback port range
		c.Close()
	}
	for _, par := range []int{1, 8} {
		name := "sequential"
		if par > 1 {
			name = fmt.Sprintf("parallel%d", par)
		}
		b.Run(name, func(b *testing.B) {
			run := func(addr string) time.Duration {
				start := time.Now()
				var wg sync.WaitGroup
				for w := 0; w < par; w++ {
					wg.Go(func() {
						for i := w; i < conns; i += par {
							one(addr)
						}
					})
				}
				wg.Wait()
				return time.Since(start)
			}
			run(bt.listeners["echo"])
			var tDirect, tTunnel time.Duration
			var cpu float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tDirect += run(up.echo)
				c0 := bt.cpuSeconds(b)
				tTunnel += run(bt.listeners["echo"])
				cpu += bt.cpuSeconds(b) - c0
			}
			n := float64(b.N * conns)
			reportRatio(b, "conns/s", n/tTunnel.Seconds(), n/tDirect.Seconds())
			// Includes closing the previous connections, which overlaps
			// the next ones.
			b.ReportMetric(cpu/n*1e6, "tunnel-CPU-µs/conn")
		})
	}
}

// BenchmarkIdle1000: 1000 connections open through the tunnel, each after
// one 64-byte echo, then idle; peak and current RSS of server+client.
func BenchmarkIdle1000(b *testing.B) {
	const conns = 1000
	up := startBenchUpstreams(b)
	bt := startBenchTunnel(b, up)
	bt.resetPeakRSS()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		open := make([]*net.TCPConn, 0, conns)
		msg, got := make([]byte, 64), make([]byte, 64)
		for j := 0; j < conns; j++ {
			c := mustDial(b, bt.listeners["echo"])
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			open = append(open, c)
		}
		time.Sleep(time.Second) // idle
		b.ReportMetric(bt.statusKiB(b, "VmRSS")/1024, "idle-RSS-MiB")
		for _, c := range open {
			c.Close()
		}
	}
	b.ReportMetric(bt.statusKiB(b, "VmHWM")/1024, "peak-RSS-MiB")
}

var _ = http.StatusOK

// selfCPU is this process's user+system CPU time in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// BenchmarkNonReaders250 (issue 11): 250 callers each send 4 MB to an echo
// service through the tunnel and never read (see TestNonReadersDoNotStall).
// From the moment they are connected, fresh connections make a 64-byte
// echo one after another, for at least 10 s and until the non-readers'
// traffic has backed up (the echo service quiet for a second; at most 25 s):
// p50, p99 and max of those echoes, how many timed out (5 s each; the run
// stops after two), how many of the 250 were refused or broken, and the
// RSS (peak and at the end) of server+client.
func BenchmarkNonReaders250(b *testing.B) {
	const (
		probeLimit = 5 * time.Second
		minProbing = 10 * time.Second
		maxProbing = 25 * time.Second
	)
	for i := 0; i < b.N; i++ {
		ec := startCountingEcho(b)
		bt := startTunnelProcs(b, map[string]string{"echo": ec.addr}, nil)
		addr := bt.listeners["echo"]
		if _, err := freshEcho(addr, probeLimit); err != nil {
			b.Fatalf("echo before the non-readers: %v", err)
		}
		bt.resetPeakRSS()
		ns := startNonReaders(b, addr, nonReaders)
		start := time.Now()
		var settled atomic.Bool
		go func() {
			time.Sleep(minProbing - time.Second)
			_, ok := ec.settle(time.Second, maxProbing-minProbing)
			settled.Store(ok)
		}()
		var lat []time.Duration
		timeouts := 0
		for timeouts < 2 && time.Since(start) < maxProbing && !settled.Load() {
			d, err := freshEcho(addr, probeLimit)
			if err != nil {
				timeouts++
				b.Logf("fresh echo %d: %v after %v", len(lat), err, d.Round(time.Millisecond))
			}
			lat = append(lat, d)
			time.Sleep(10 * time.Millisecond)
		}
		b.ReportMetric(bt.statusKiB(b, "VmHWM")/1024, "peak-RSS-MiB")
		b.ReportMetric(bt.statusKiB(b, "VmRSS")/1024, "RSS-MiB")
		refused := len(ns.failed())
		if refused == 0 {
			refused = len(ns.verify(5 * time.Second))
		}
		slices.Sort(lat)
		b.ReportMetric(ms(percentile(lat, 0.50)), "fresh-p50-ms")
		b.ReportMetric(ms(percentile(lat, 0.99)), "fresh-p99-ms")
		b.ReportMetric(ms(lat[len(lat)-1]), "fresh-max-ms")
		b.ReportMetric(float64(len(lat)), "fresh-echoes")
		b.ReportMetric(float64(timeouts), "fresh-timeouts")
		b.ReportMetric(float64(refused), "refused")
		b.Logf("echo service echoed %d of %d bytes", ec.echoed.Load(), int64(nonReaders)*nonReaderSend)
	}
}

// percentile is the nearest-rank percentile of sorted durations (a timed-out
// sample counts with the time it was given).
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
