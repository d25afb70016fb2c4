package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
	"github.com/l5d-tunnel/l5d-tunnel/internal/tunnel"
)

// The test binary doubles as the tunnel binary: with TUNNEL_TEST_MAIN=1 it
// runs main's logic on its arguments, so the process tests below exercise
// real processes (signals, SIGKILL, SIGSTOP) without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("TUNNEL_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestFlags(t *testing.T) {
	env := func(string) string { return "" }
	tests := map[string]struct {
		args []string
		code int
		want string // substring of stderr (or stdout for help)
	}{
		"no command":          {nil, exitUsage, "Usage:"},
		"unknown command":     {[]string{"serve"}, exitUsage, `unknown command "serve"`},
		"top help":            {[]string{"--help"}, exitOK, "tunnel server [flags]"},
		"server help":         {[]string{"server", "--help"}, exitOK, "Examples:"},
		"client help":         {[]string{"client", "-h"}, exitOK, "--upstream"},
		"version":             {[]string{"version"}, exitOK, "tunnel"},
		"unknown flag":        {[]string{"server", "--nope"}, exitUsage, "--nope"},
		"bad port":            {[]string{"server", "--port", "gateway"}, exitUsage, `"--port"`},
		"bad port name":       {[]string{"server", "--port", "a:b=:1"}, exitUsage, `"--port"`},
		"bad upstream":        {[]string{"client", "--upstream", "gw=nohost"}, exitUsage, `"--upstream"`},
		"no token":            {[]string{"server", "--port", "gw=:0"}, exitUsage, "--token-file"},
		"no ports":            {[]string{"server", "--token-file", "/dev/null"}, exitUsage, "--port"},
		"bad duration":        {[]string{"server", "--keepalive-timeout", "soon"}, exitUsage, "--keepalive-timeout"},
		"bad log format":      {[]string{"server", "--log-format", "xml", "--port", "gw=:0", "--token-file", "/x"}, exitUsage, "--log-format"},
		"client no server":    {[]string{"client", "--upstream", "gw=h:1", "--token-file", "/x"}, exitUsage, "--server"},
		"client bad scheme":   {[]string{"client", "--server", "http://h/tunnel", "--upstream", "gw=h:1", "--token-file", "/x"}, exitUsage, "--server"},
		"positional argument": {[]string{"client", "extra"}, exitUsage, `"extra"`},
		"negative max-procs":  {[]string{"server", "--port", "gw=127.0.0.1:0", "--token-file", "/x", "--max-procs", "-1"}, exitUsage, "--max-procs"},
		"bad window":          {[]string{"server", "--port", "gw=:0", "--token-file", "/x", "--stream-window", "10"}, exitUsage, "window"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb, env)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String()+errb.String(), tc.want) {
				t.Fatalf("output lacks %q\nstdout: %s\nstderr: %s", tc.want, out.String(), errb.String())
			}
		})
	}
}

// TestFlagBounds: every size, count and duration flag of both commands has
// a range; a value outside it exits 2 naming the flag, before anything is
// allocated or bound. The table must have a row for every such flag.
func TestFlagBounds(t *testing.T) {
	bad := map[string][2]string{ // flag: {too small, too large}
		"keepalive-interval": {"1ms", "1h"},
		"keepalive-timeout":  {"15s", "100h"}, // below 2x the 10s interval
		"max-frame-size":     {"1000", "65536"},
		"stream-window":      {"1000", "1000000000"},
		"session-window":     {"1000", "100000000000"},
		"max-streams":        {"0", "100000"},
		"ws-read-buffer":     {"100", "999999999999"},
		"ws-write-buffer":    {"100", "999999999999"},
		"copy-buffer":        {"100", "999999999999"},
		"drain-grace":        {"-1s", "1000h"},
		"max-procs":          {"-1", "100000"},
		"dial-timeout":       {"0s", "24h"},
		"handshake-timeout":  {"0s", "24h"},
		"header-timeout":     {"0s", "24h"},
		"backoff-min":        {"0s", "1000h"},
		"backoff-max":        {"1ms", "1000h"}, // below --backoff-min
		"max-pending-conns":  {"0", "10000000"},
		"reply-timeout":      {"1ms", "1h"},
	}
	cmds := map[string][]string{
		"server": {"server", "--listen", "127.0.0.1:0", "--admin-addr", "", "--port", "gw=127.0.0.1:0", "--token-file", "/nonexistent"},
		"client": {"client", "--server", "ws://127.0.0.1:1/tunnel", "--admin-addr", "", "--upstream", "gw=127.0.0.1:1", "--token-file", "/nonexistent"},
	}
	sets := map[string]*pflag.FlagSet{
		"server": serverFlags(new(tunnel.ServerConfig), new(logOpts)),
		"client": clientFlags(new(tunnel.ClientConfig), new(logOpts)),
	}
	// Anything that gets past validation starts and stops at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for cmd, fs := range sets {
		fs.VisitAll(func(f *pflag.Flag) {
			if typ := f.Value.Type(); typ != "int" && typ != "duration" {
				return
			}
			vals, ok := bad[f.Name]
			if !ok {
				t.Errorf("%s --%s has no row in the bounds table", cmd, f.Name)
				return
			}
			for _, v := range vals {
				t.Run(cmd+"/"+f.Name+"="+v, func(t *testing.T) {
					var out, errb bytes.Buffer
					args := append(append([]string(nil), cmds[cmd]...), "--"+f.Name, v)
					done := make(chan int, 1)
					go func() { done <- run(ctx, args, &out, &errb, func(string) string { return "" }) }()
					var code int
					select {
					case code = <-done:
					case <-time.After(10 * time.Second):
						t.Fatalf("--%s %s: still running after 10s; it must be rejected before anything starts", f.Name, v)
					}
					if code != exitUsage || !strings.Contains(errb.String(), "--"+f.Name) {
						t.Fatalf("exit %d, want %d naming --%s\nstderr: %s", code, exitUsage, f.Name, errb.String())
					}
				})
			}
		})
	}
}

// proc is a tunnel process started from the test binary.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) { p.mu.Lock(); defer p.mu.Unlock(); return p.logs.Write(b) }
func (p *proc) output() string              { p.mu.Lock(); defer p.mu.Unlock(); return p.logs.String() }

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(exe, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "TUNNEL_TEST_MAIN=1", "TUNNEL_TOKEN=proc-test-token")
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s logs:\n%s", args[0], p.output())
		}
	})
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type addrs struct{ listen, admin, gw, cadmin, up string }

func newAddrs(t *testing.T, upstream string) addrs {
	return addrs{freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), upstream}
}

func fast() []string {
	// Dead peers are not what these tests wait for (killed processes close
	// their sockets; takeover is immediate), so a generous timeout keeps a
	// starved CI machine from dropping healthy sessions.
	return []string{"--keepalive-interval", "500ms", "--keepalive-timeout", "10s", "--log-format", "text"}
}

func startServerProc(t *testing.T, a addrs, extra ...string) *proc {
	args := append([]string{"server", "--listen", a.listen, "--admin-addr", a.admin, "--port", "gw=" + a.gw}, fast()...)
	return start(t, append(args, extra...)...)
}

func startClientProc(t *testing.T, a addrs, upstream string, extra ...string) *proc {
	args := append([]string{"client", "--server", "ws://" + a.listen + "/tunnel", "--admin-addr", freeAddr(t),
		"--upstream", "gw=" + upstream, "--backoff-min", "20ms", "--backoff-max", "200ms"}, fast()...)
	return start(t, append(args, extra...)...)
}

func status(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitStatus(t *testing.T, url string, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for status(url) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %d, want %d after %v", url, status(url), want, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tagUpstream answers every connection with its tag and then echoes.
func tagUpstream(t *testing.T, tag string) string {
	return testsupport.Serve(t, func(c net.Conn) {
		_, _ = c.Write([]byte(tag))
		_, _ = io.Copy(c, c)
	})
}

// who connects to the listener and returns the upstream's tag ("" if the
// connection was closed without one).
func who(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return ""
	}
	return string(b)
}

func waitWho(t *testing.T, addr, want string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for got := who(addr); got != want; got = who(addr) {
		if time.Since(start) > d {
			t.Fatalf("listener %s answered %q, want %q after %v", addr, got, want, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestProcessClientKilledAndReplaced: SIGKILL the client, start another one;
// the server serves through the new one at once. Then freeze (SIGSTOP) the
// new one and start a third: it takes over immediately, without waiting for
// the frozen session's keepalive timeout.
func TestProcessClientKilledAndReplaced(t *testing.T) {
	a := newAddrs(t, "")
	startServerProc(t, a)
	waitStatus(t, "http://"+a.admin+"/readyz", 503, 10*time.Second)
	if got := who(a.gw); got != "" {
		t.Fatalf("listener answered %q with no client", got)
	}
	clientA := startClientProc(t, a, tagUpstream(t, "A"))
	waitStatus(t, "http://"+a.admin+"/readyz", 200, 10*time.Second)
	waitWho(t, a.gw, "A", 5*time.Second)

	_ = clientA.cmd.Process.Kill()
	<-clientA.done
	waitStatus(t, "http://"+a.admin+"/readyz", 503, 5*time.Second)
	startClientProc(t, a, tagUpstream(t, "B"))
	waitWho(t, a.gw, "B", 10*time.Second)

	// Frozen, not dead: its TCP connection stays open.
	clientC := startClientProc(t, a, tagUpstream(t, "C"))
	waitWho(t, a.gw, "C", 10*time.Second)
	_ = clientC.cmd.Process.Signal(syscall.SIGSTOP)
	startClientProc(t, a, tagUpstream(t, "D"))
	waitWho(t, a.gw, "D", 10*time.Second)
	if status("http://"+a.admin+"/readyz") != 200 {
		t.Fatal("server not ready with a live client")
	}
}

// TestProcessServerRestart: SIGKILL the server and start it again on the
// same addresses; the client comes back by itself.
func TestProcessServerRestart(t *testing.T) {
	a := newAddrs(t, "")
	srv := startServerProc(t, a)
	cli := startClientProc(t, a, tagUpstream(t, "A"))
	waitWho(t, a.gw, "A", 10*time.Second)
	_ = srv.cmd.Process.Kill()
	<-srv.done
	time.Sleep(200 * time.Millisecond)
	startServerProc(t, a)
	waitWho(t, a.gw, "A", 10*time.Second)
	if strings.Contains(cli.output(), "proc-test-token") {
		t.Fatal("client logged the token")
	}
}

// TestProcessSIGTERMDrain: on SIGTERM the server stops accepting, reports
// not ready, lets an open stream finish, then exits 0.
func TestProcessSIGTERMDrain(t *testing.T) {
	a := newAddrs(t, "")
	srv := startServerProc(t, a, "--drain-grace", "20s")
	cli := startClientProc(t, a, tagUpstream(t, "A"))
	waitWho(t, a.gw, "A", 10*time.Second)
	conn, err := net.Dial("tcp", a.gw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	waitStatus(t, "http://"+a.admin+"/readyz", 503, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", a.gw, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The open stream still works both ways during the drain.
	for i := 0; i < 20; i++ {
		msg := []byte(fmt.Sprintf("msg %02d", i))
		if _, err := conn.Write(msg); err != nil {
			t.Fatalf("write during drain: %v", err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo during drain = %q, %v", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-srv.done:
		t.Fatal("server exited while a stream was open and the grace not over")
	default:
	}
	conn.Close()
	select {
	case <-srv.done:
		if srv.err != nil {
			t.Fatalf("server exit: %v", srv.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit after its last stream closed")
	}
	_ = cli.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-cli.done:
		if cli.err != nil {
			t.Fatalf("client exit: %v", cli.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client did not exit on SIGTERM")
	}
}

// echoUpstream echoes every connection and half-closes after the caller's
// FIN.
func echoUpstream(t *testing.T) string {
	return testsupport.Serve(t, func(c net.Conn) {
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
	})
}

// pattern is n deterministic bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// TestProcessClientSIGTERMDeliversEverything is issue 8 item 1 with real
// processes: 64 MiB echoes through the server's listener, the client gets
// SIGTERM in the middle of each; its drain must not drop a byte (the caller
// gets all of it, then EOF).
func TestProcessClientSIGTERMDeliversEverything(t *testing.T) {
	const size = 64 << 20
	data := pattern(size)
	a := newAddrs(t, "")
	up := echoUpstream(t)
	startServerProc(t, a)
	for round := 0; round < 3; round++ {
		cli := startClientProc(t, a, up)
		waitStatus(t, "http://"+a.admin+"/readyz", 200, 10*time.Second)
		conn, err := net.Dial("tcp", a.gw)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		go func() {
			_, _ = conn.Write(data)
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		got := make([]byte, 0, size)
		buf := make([]byte, 256<<10)
		signalled := false
		var rerr error
		for {
			n, err := conn.Read(buf)
			got = append(got, buf[:n]...)
			if !signalled && len(got) >= 4<<20 {
				_ = cli.cmd.Process.Signal(syscall.SIGTERM)
				signalled = true
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					rerr = err
				}
				break
			}
		}
		conn.Close()
		if rerr != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: caller got %d of %d bytes (equal: %v), err %v", round, len(got), size, bytes.Equal(got, data[:min(len(got), size)]), rerr)
		}
		select {
		case <-cli.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: client did not exit after its drain", round)
		}
		waitStatus(t, "http://"+a.admin+"/readyz", 503, 10*time.Second)
	}
}

// TestProcessClientKilledResetsCaller is issue 8 item 2 with real
// processes: kill -9 of the client during a large download; the caller of
// the server's listener must see a reset, never a clean short EOF.
func TestProcessClientKilledResetsCaller(t *testing.T) {
	upstream := testsupport.Serve(t, func(c net.Conn) {
		chunk := make([]byte, 1<<20)
		for i := 0; i < 256; i++ {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	a := newAddrs(t, "")
	startServerProc(t, a)
	cli := startClientProc(t, a, upstream)
	waitStatus(t, "http://"+a.admin+"/readyz", 200, 10*time.Second)
	conn, err := net.Dial("tcp", a.gw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.CopyN(io.Discard, conn, 8<<20); err != nil {
		t.Fatal(err)
	}
	_ = cli.cmd.Process.Kill()
	n, err := io.Copy(io.Discard, conn)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("caller: %d more bytes, then %v; want a connection reset (a clean EOF after %d of %d MiB looks complete)", n, err, 8+n>>20, 256)
	}
}
