package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
)

// The chaos test (issue 8): real bin/tunnel server and client in two network
// namespaces joined by a veth, upstreams (echo, source, sink) on the home
// side, callers on the cloud side. Every round starts a mix of callers and
// then one fault, and checks what every caller and every upstream saw, that
// the tunnel recovers, and that both ends return to their idle state. See
// docs/e2e.md ("The chaos test").
//
// Environment: L5D_CHAOS_DURATION (default 60s; rounds go on while time is
// left, and every fault runs at least once), L5D_CHAOS_SEED (replays a run:
// the caller mix, sizes and fault offsets), L5D_CHAOS_LINK_DOWN (default 6s).

// Bounds the chaos test asserts.
const (
	// chaosKeepalive and chaosKeepaliveTimeout are the tunnel's keepalive
	// flags here: a dead or frozen peer is dropped within 4 s.
	chaosKeepalive        = 1 * time.Second
	chaosKeepaliveTimeout = 4 * time.Second
	chaosBackoffMax       = 1 * time.Second
	// chaosDrainGrace is --drain-grace: every transfer of a round fits in it.
	chaosDrainGrace = 10 * time.Second
	// chaosRecoveryBound: a fresh echo works through the tunnel within this
	// after the fault ended (process restarted, new client started, link up).
	chaosRecoveryBound = 10 * time.Second
	// chaosSettleBound: after the round's callers are done, streams_open is
	// 0, one session is up and goroutines are back to baseline (both ends),
	// and no upstream connection is left open, within this.
	chaosSettleBound = 15 * time.Second
	// chaosGoroutineMargin: goroutines after a round may exceed the idle
	// baseline by at most this much.
	chaosGoroutineMargin = 5
	// chaosRSSBound: server + client(s) resident set, sampled every 200 ms.
	chaosRSSBound = 256 << 20
	// chaosCallerBound: a caller that has neither completed nor seen an
	// error by then is hung (the tunnel pinned its stream).
	chaosCallerBound = 30 * time.Second
	// chaosExitBound: a SIGTERMed process exits (code 0) within this.
	chaosExitBound = chaosDrainGrace + 10*time.Second
)

// listeners of the chaos pair: the server listens on cloud's loopback, the
// client forwards to the test's upstreams on home's loopback.
var chaosListeners = []harness.PairListener{
	{Name: "echo", ServerAddr: "127.0.0.1:7001", Upstream: "127.0.0.1:7101"},
	{Name: "source", ServerAddr: "127.0.0.1:7002", Upstream: "127.0.0.1:7102"},
	{Name: "sink", ServerAddr: "127.0.0.1:7003", Upstream: "127.0.0.1:7103"},
}

func TestChaos(t *testing.T) {
	needRoot(t)
	duration := testsupport.EnvDuration(t, "L5D_CHAOS_DURATION", 60*time.Second)
	linkDown := testsupport.EnvDuration(t, "L5D_CHAOS_LINK_DOWN", 6*time.Second)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("L5D_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("L5D_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("chaos: seed %d (L5D_CHAOS_SEED=%d replays this mix), duration %s, link down %s", seed, seed, duration, linkDown)
	begin := time.Now()

	work := workDir(t, "chaos", "tunnel logs")
	bins := buildBinaries(t, filepath.Join(work, "bin"))
	if bins.tunnelErr != nil {
		t.Fatalf("bin/tunnel: %v", bins.tunnelErr)
	}
	tuning := []string{
		"--log-format=text",
		"--keepalive-interval=" + chaosKeepalive.String(),
		"--keepalive-timeout=" + chaosKeepaliveTimeout.String(),
		"--drain-grace=" + chaosDrainGrace.String(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration+10*time.Minute)
	defer cancel()
	pair, err := harness.UpPair(ctx, harness.PairConfig{
		Role: "chaos", WorkDir: work, TunnelBin: bins.tunnel, Listeners: chaosListeners,
		ServerArgs: tuning,
		ClientArgs: append(slices.Clone(tuning), "--backoff-min=100ms", "--backoff-max="+chaosBackoffMax.String(),
			"--dial-timeout=2s"),
	})
	t.Cleanup(pair.Close)
	if err != nil {
		t.Fatalf("chaos topology: %v", err)
	}
	ups, err := startUpstreams(pair.Home, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ups.close)

	c := &chaos{t: t, ctx: ctx, pair: pair, ups: ups, rng: rand.New(rand.NewPCG(seed, 0x6c35)), seed: seed, linkDown: linkDown}
	stopRSS := c.sampleRSS()
	defer stopRSS()

	// the idle baseline: one session up, a transfer done, nothing open
	if d, err := c.freshEcho(chaosRecoveryBound); err != nil {
		t.Fatalf("no echo through the tunnel after start: %v", err)
	} else {
		t.Logf("first echo through the tunnel after %.2fs", d.Seconds())
	}
	if err := c.baseline(); err != nil {
		t.Fatal(err)
	}
	metric(t, "chaos_goroutines", map[string]string{"what": "server baseline"}, float64(c.baseServer))
	metric(t, "chaos_goroutines", map[string]string{"what": "client baseline"}, float64(c.baseClient))

	faults := chaosFaults()
	var worstRecovery, worstSettle time.Duration
	rounds := 0
	for i := 0; i < len(faults) || time.Since(begin) < duration; i++ {
		f := faults[i%len(faults)]
		if i >= len(faults) {
			f = faults[c.rng.IntN(len(faults))]
		}
		rounds++
		ok, rec, settle := c.round(i+1, f)
		worstRecovery, worstSettle = max(worstRecovery, rec), max(worstSettle, settle)
		if !ok {
			t.Fatalf("round %d (%s): the tunnel did not come back; later rounds would only repeat this", i+1, f.name)
		}
	}
	peak := c.rssPeak()
	metric(t, "chaos_rss_mib", map[string]string{"what": "peak server+clients, whole run"}, float64(peak)/(1<<20))
	metric(t, "chaos_recovery_seconds", map[string]string{"what": "worst round"}, worstRecovery.Seconds())
	metric(t, "chaos_settle_seconds", map[string]string{"what": "worst round"}, worstSettle.Seconds())
	metric(t, "chaos_rounds", nil, float64(rounds))
	metric(t, "chaos_total_seconds", nil, time.Since(begin).Seconds())
}

// --- the run ------------------------------------------------------------------

type chaos struct {
	t        *testing.T
	ctx      context.Context
	pair     *harness.Pair
	ups      *upstreams
	rng      *rand.Rand
	seed     uint64
	linkDown time.Duration

	cur        int // sequence number of the current client
	baseServer int
	baseClient int

	rssMu        sync.Mutex
	rssRound     int64 // peak sum since the round began
	rssRun       int64
	rssRoundProc map[string]int64
}

// sampleRSS sums VmRSS of the server and every live client every 200 ms.
func (c *chaos) sampleRSS() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			var sum int64
			per := map[string]int64{}
			procs := []*harness.Proc{c.pair.Server()}
			for seq := 0; ; seq++ {
				p := c.pair.ClientOrNil(seq)
				if p == nil {
					break
				}
				procs = append(procs, p)
			}
			for _, p := range procs {
				if p == nil || p.Exited() {
					continue
				}
				kb, err := p.StatusKB("VmRSS")
				if err != nil {
					continue
				}
				sum += kb << 10
				per[p.Name] = kb << 10
			}
			c.rssMu.Lock()
			c.rssRound = max(c.rssRound, sum)
			c.rssRun = max(c.rssRun, sum)
			if c.rssRoundProc == nil {
				c.rssRoundProc = map[string]int64{}
			}
			for k, v := range per {
				c.rssRoundProc[k] = max(c.rssRoundProc[k], v)
			}
			c.rssMu.Unlock()
			select {
			case <-done:
				return
			case <-tk.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (c *chaos) rssPeak() int64 {
	c.rssMu.Lock()
	defer c.rssMu.Unlock()
	return c.rssRun
}

// takeRoundRSS returns the round's peak sum and per-process peaks and starts
// the next round's.
func (c *chaos) takeRoundRSS() (int64, map[string]int64) {
	c.rssMu.Lock()
	defer c.rssMu.Unlock()
	s, per := c.rssRound, c.rssRoundProc
	c.rssRound, c.rssRoundProc = 0, nil
	return s, per
}

// idle is one reading of both ends' gauges.
type idle struct {
	serverStreams, clientStreams       float64
	serverSessions, clientSessions     float64
	serverGoroutines, clientGoroutines float64
	upstreamConns                      int
}

func (i idle) String() string {
	return fmt.Sprintf("server: streams_open %.0f, sessions %.0f, goroutines %.0f; client: streams_open %.0f, sessions %.0f, goroutines %.0f; upstream connections open %d",
		i.serverStreams, i.serverSessions, i.serverGoroutines, i.clientStreams, i.clientSessions, i.clientGoroutines, i.upstreamConns)
}

func (c *chaos) readIdle() (idle, error) {
	var r idle
	sm, err := c.pair.ServerMetrics(2 * time.Second)
	if err != nil {
		return r, fmt.Errorf("server /metrics: %w", err)
	}
	cm, err := c.pair.ClientMetrics(c.cur, 2*time.Second)
	if err != nil {
		return r, fmt.Errorf("client %d /metrics: %w", c.cur, err)
	}
	for _, need := range []string{"l5d_tunnel_streams_open", "l5d_tunnel_sessions", "go_goroutines"} {
		if !sm.Has(need) || !cm.Has(need) {
			return r, fmt.Errorf("/metrics has no %s", need)
		}
	}
	r.serverStreams, r.clientStreams = sm.Sum("l5d_tunnel_streams_open"), cm.Sum("l5d_tunnel_streams_open")
	r.serverSessions, r.clientSessions = sm.Sum("l5d_tunnel_sessions"), cm.Sum("l5d_tunnel_sessions")
	r.serverGoroutines, r.clientGoroutines = sm.Sum("go_goroutines"), cm.Sum("go_goroutines")
	r.upstreamConns = c.ups.openConns()
	return r, nil
}

// baseline records the idle goroutine counts of both ends: the median of
// five readings once nothing is open.
func (c *chaos) baseline() error {
	var last idle
	err := harness.Poll(c.ctx, chaosSettleBound, func() error {
		var err error
		if last, err = c.readIdle(); err != nil {
			return err
		}
		if last.serverStreams != 0 || last.clientStreams != 0 || last.serverSessions != 1 || last.clientSessions != 1 {
			return fmt.Errorf("not idle: %s", last)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	var sg, cg []int
	for range 5 {
		r, err := c.readIdle()
		if err != nil {
			return err
		}
		sg, cg = append(sg, int(r.serverGoroutines)), append(cg, int(r.clientGoroutines))
		time.Sleep(200 * time.Millisecond)
	}
	slices.Sort(sg)
	slices.Sort(cg)
	c.baseServer, c.baseClient = sg[2], cg[2]
	return nil
}

// settle waits until both ends are idle again; it returns how long that took.
func (c *chaos) settle() (time.Duration, idle, error) {
	start := time.Now()
	var last idle
	err := harness.Poll(c.ctx, chaosSettleBound, func() error {
		var err error
		if last, err = c.readIdle(); err != nil {
			return err
		}
		var p []string
		if last.serverStreams != 0 {
			p = append(p, fmt.Sprintf("server streams_open %.0f", last.serverStreams))
		}
		if last.clientStreams != 0 {
			p = append(p, fmt.Sprintf("client streams_open %.0f", last.clientStreams))
		}
		if last.serverSessions != 1 || last.clientSessions != 1 {
			p = append(p, fmt.Sprintf("sessions server %.0f client %.0f (want 1 and 1)", last.serverSessions, last.clientSessions))
		}
		if g := int(last.serverGoroutines); g > c.baseServer+chaosGoroutineMargin {
			p = append(p, fmt.Sprintf("server goroutines %d > baseline %d + %d", g, c.baseServer, chaosGoroutineMargin))
		}
		if g := int(last.clientGoroutines); g > c.baseClient+chaosGoroutineMargin {
			p = append(p, fmt.Sprintf("client goroutines %d > baseline %d + %d", g, c.baseClient, chaosGoroutineMargin))
		}
		if last.upstreamConns != 0 {
			p = append(p, fmt.Sprintf("%d upstream connections still open (%s)", last.upstreamConns, c.ups.describeOpen()))
		}
		if len(p) > 0 {
			return errors.New(strings.Join(p, "; "))
		}
		return nil
	})
	return time.Since(start), last, err
}

// freshEcho retries a 64 KiB echo through the tunnel until one comes back
// intact; it returns how long that took.
func (c *chaos) freshEcho(bound time.Duration) (time.Duration, error) {
	start := time.Now()
	payload := make([]byte, 64<<10)
	var last error
	for attempt := 0; time.Since(start) < bound; attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		last = func() error {
			dctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
			defer cancel()
			conn, err := c.pair.Cloud.DialContext(dctx, "tcp", chaosListeners[0].ServerAddr)
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			binary.LittleEndian.PutUint64(payload, uint64(attempt))
			if _, err := conn.Write(payload); err != nil {
				return err
			}
			if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
				return err
			}
			got, err := io.ReadAll(conn)
			if err != nil {
				return err
			}
			if string(got) != string(payload) {
				return fmt.Errorf("echo came back with %d bytes, want the %d sent", len(got), len(payload))
			}
			return nil
		}()
		if last == nil {
			return time.Since(start), nil
		}
	}
	return time.Since(start), fmt.Errorf("no intact echo within %s; last attempt: %w", bound, last)
}

// --- faults ---------------------------------------------------------------------

type chaosFault struct {
	name string
	// killsServer, killsClient: the fault SIGKILLs that process, whose
	// sockets the kernel then closes with a FIN the tunnel cannot choose; a
	// short clean EOF on that side after the kill is not held against it.
	killsServer, killsClient bool
	// graceful: SIGTERM; a transfer already flowing must complete intact.
	graceful bool
	// inject runs the fault until it is over (process restarted, link up,
	// new client started) and returns an action for after the callers are
	// done (or nil).
	inject func(c *chaos, r *chaosRound) (after func() error, err error)
}

func chaosFaults() []chaosFault {
	return []chaosFault{
		{name: "SIGKILL server", killsServer: true, inject: func(c *chaos, r *chaosRound) (func() error, error) {
			r.markFault()
			c.pair.Server().Kill()
			return nil, c.pair.StartServer(c.ctx)
		}},
		{name: "SIGKILL client", killsClient: true, inject: func(c *chaos, r *chaosRound) (func() error, error) {
			old := c.pair.Client(c.cur)
			r.markFault()
			old.Kill()
			killed := time.Now()
			// The kernel closed the killed client's upstream sockets with a
			// FIN (not the tunnel's choice); an upstream that already had
			// the caller's FIN cannot tell and would wait for its own
			// timeout. Those connections were accepted before the kill:
			// close them like that timeout would.
			return func() error {
				if n := c.ups.closeAcceptedBefore(killed); n > 0 {
					c.t.Logf("round %d: closed %d upstream connections of the SIGKILLed client (kernel FIN, half-closed both ways)", r.n, n)
				}
				return nil
			}, c.nextClient()
		}},
		{name: "SIGSTOP client, second client started", inject: func(c *chaos, r *chaosRound) (func() error, error) {
			old := c.pair.Client(c.cur)
			r.markFault()
			if err := old.Signal(syscall.SIGSTOP); err != nil {
				return nil, err
			}
			if err := c.nextClient(); err != nil {
				return nil, err
			}
			// once the callers are done: the frozen client wakes up to a
			// dead session (its relays must reset their upstreams), then
			// is stopped gracefully like a replaced pod
			return func() error {
				if err := old.Signal(syscall.SIGCONT); err != nil {
					return err
				}
				time.Sleep(time.Second)
				return c.terminate(old)
			}, nil
		}},
		{name: "SIGSTOP newest client, older one up", inject: func(c *chaos, r *chaosRound) (func() error, error) {
			// a second client (a replacement pod) takes over new
			// connections, then freezes: the older one is still healthy
			p, seq, err := c.pair.StartClient()
			if err != nil {
				return nil, err
			}
			if err := c.pair.WaitClientReady(c.ctx, seq, chaosRecoveryBound); err != nil {
				return nil, err
			}
			r.markFault()
			if err := p.Signal(syscall.SIGSTOP); err != nil {
				return nil, err
			}
			return func() error {
				if err := p.Signal(syscall.SIGCONT); err != nil {
					return err
				}
				time.Sleep(time.Second)
				return c.terminate(p)
			}, nil
		}},
		{name: "SIGTERM server", graceful: true, inject: func(c *chaos, r *chaosRound) (func() error, error) {
			r.markFault()
			if err := c.terminate(c.pair.Server()); err != nil {
				return nil, err
			}
			return nil, c.pair.StartServer(c.ctx)
		}},
		{name: "SIGTERM client, second client started", graceful: true, inject: func(c *chaos, r *chaosRound) (func() error, error) {
			old := c.pair.Client(c.cur)
			r.markFault()
			if err := old.Signal(syscall.SIGTERM); err != nil {
				return nil, err
			}
			// a rolling update: the new client comes up while the old drains
			if err := c.nextClient(); err != nil {
				return nil, err
			}
			return func() error { return c.waitExit(old, "exit 0") }, nil
		}},
		{name: "link down", inject: func(c *chaos, r *chaosRound) (func() error, error) {
			r.markFault()
			if err := c.pair.SetLink(false); err != nil {
				return nil, err
			}
			time.Sleep(c.linkDown)
			return nil, c.pair.SetLink(true)
		}},
	}
}

// nextClient starts a client and makes it the current one (it is ready when
// the fresh echo works).
func (c *chaos) nextClient() error {
	_, seq, err := c.pair.StartClient()
	if err != nil {
		return err
	}
	c.cur = seq
	return nil
}

// terminate SIGTERMs p and waits for it to exit with status 0.
func (c *chaos) terminate(p *harness.Proc) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	return c.waitExit(p, "exit 0")
}

func (c *chaos) waitExit(p *harness.Proc, want string) error {
	if !p.WaitExit(chaosExitBound) {
		return fmt.Errorf("%s did not exit within %s of SIGTERM (drain grace %s)\n%s", p.Name, chaosExitBound, chaosDrainGrace, p.Tail(20))
	}
	if got := p.ExitStatus(); got != want {
		return fmt.Errorf("%s ended with %q after SIGTERM, want %q\n%s", p.Name, got, want, p.Tail(20))
	}
	return nil
}

// --- a round --------------------------------------------------------------------

type chaosRound struct {
	n       int
	fault   chaosFault
	mu      sync.Mutex
	faultAt time.Time
}

func (r *chaosRound) markFault() {
	r.mu.Lock()
	r.faultAt = time.Now()
	r.mu.Unlock()
}

func (r *chaosRound) faultTime() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.faultAt
}

func (r *chaosRound) label() string { return fmt.Sprintf("%d %s", r.n, r.fault.name) }

// round runs one round; ok is false when the tunnel did not recover (the
// run cannot go on).
func (c *chaos) round(n int, f chaosFault) (ok bool, recovery, settle time.Duration) {
	t := c.t
	r := &chaosRound{n: n, fault: f}
	name := fmt.Sprintf("round %d (%s)", n, f.name)
	c.takeRoundRSS()
	start := time.Now()

	callers := c.mix()
	var wg sync.WaitGroup
	for _, cl := range callers {
		wg.Go(func() { c.runCaller(cl) })
	}
	// the fault hits while transfers flow; some callers start after it
	offset := 300*time.Millisecond + time.Duration(c.rng.IntN(700))*time.Millisecond
	time.Sleep(offset)
	after, err := f.inject(c, r)
	ended := time.Now()
	if err != nil {
		t.Errorf("%s: injecting the fault: %v", name, err)
	}
	rec, recErr := c.freshEcho(chaosRecoveryBound)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	waitCallers := func() {
		select {
		case <-done:
		case <-time.After(chaosCallerBound + 10*time.Second):
			t.Errorf("%s: callers still running %s after the round began (each has a %s deadline)", name, time.Since(start).Round(time.Second), chaosCallerBound)
			<-done // every caller operation has a deadline
		}
	}
	if recErr != nil {
		t.Errorf("%s: no recovery within %s after the fault ended: %v\nserver log:\n%s\nclient log:\n%s",
			name, chaosRecoveryBound, recErr, c.pair.Server().Tail(15), c.pair.Client(c.cur).Tail(15))
		waitCallers()
		return false, rec, 0
	}
	labels := map[string]string{"fault": r.label()}
	metric(t, "chaos_recovery_seconds", labels, rec.Seconds())
	metric(t, "chaos_outage_seconds", labels, ended.Sub(r.faultTime()).Seconds()+rec.Seconds())
	waitCallers()
	if after != nil {
		if err := after(); err != nil {
			t.Errorf("%s: after the callers: %v", name, err)
		}
	}
	settle, st, err := c.settle()
	if err != nil {
		t.Errorf("%s: the tunnel did not return to idle within %s after the callers were done: %v\nserver log:\n%s\nclient log:\n%s",
			name, chaosSettleBound, err, c.pair.Server().Tail(15), c.pair.Client(c.cur).Tail(15))
	}
	metric(t, "chaos_settle_seconds", labels, settle.Seconds())
	metric(t, "chaos_goroutines", map[string]string{"fault": r.label(), "what": "server after"}, st.serverGoroutines)
	metric(t, "chaos_goroutines", map[string]string{"fault": r.label(), "what": "client after"}, st.clientGoroutines)

	// what every caller and upstream saw
	counts := map[string]int{}
	var moved int64
	for _, cl := range callers {
		c.ups.attachSink(cl)
		outcome, problem := c.judge(r, cl)
		counts[outcome]++
		moved += cl.got + cl.sent
		if problem != "" {
			t.Errorf("%s: %s #%d (%s): %s", name, cl.kind, cl.id, cl.describe(), problem)
		}
	}
	outcomes := make([]string, 0, len(counts))
	for o := range counts {
		outcomes = append(outcomes, o)
	}
	slices.Sort(outcomes)
	var summary []string
	for _, o := range outcomes {
		summary = append(summary, fmt.Sprintf("%s %d", o, counts[o]))
		metric(t, "chaos_callers", map[string]string{"fault": r.label(), "what": o}, float64(counts[o]))
	}
	peak, per := c.takeRoundRSS()
	metric(t, "chaos_rss_mib", map[string]string{"fault": r.label(), "what": "peak server+clients"}, float64(peak)/(1<<20))
	if peak > chaosRSSBound {
		t.Errorf("%s: server+client RSS peaked at %.1f MiB, bound %d MiB (per process: %v)", name, float64(peak)/(1<<20), chaosRSSBound>>20, mib(per))
	}
	metric(t, "chaos_mib_moved", map[string]string{"fault": r.label()}, float64(moved)/(1<<20))
	t.Logf("%s: fault %s after the first callers; %d callers: %s; recovery %.2fs, settle %.2fs, RSS peak %.1f MiB; round %s",
		name, offset, len(callers), strings.Join(summary, ", "), rec.Seconds(), settle.Seconds(), float64(peak)/(1<<20), time.Since(start).Round(100*time.Millisecond))
	return true, rec, settle
}

func mib(m map[string]int64) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
	}
	return out
}

// --- callers ----------------------------------------------------------------------

// Caller kinds.
const (
	kindEcho     = "echo"     // sends, half-closes, reads the echo back; checks sha256
	kindDownload = "download" // asks source for N bytes, reads them; checks sha256
	kindUpload   = "upload"   // sends N bytes to sink, half-closes, waits for sink's sha256 (sink stays silent a while)
	kindNoRead   = "no-read"  // sends to echo and never reads; closes after a while
	kindAbort    = "abort"    // downloads, then aborts with an RST mid-transfer
	kindAbortUp  = "abort-upload"
	// silent-upload: like upload, but the sink never answers; the caller
	// gives up (RST) after chaosPatience. Whatever ends it, the sink's
	// connection must end with it.
	kindSilent   = "silent-upload"
	kindNoReadDL = "no-read-download" // asks source for 64 MiB and never reads
)

// chaosPatience is how long a silent-upload caller waits for an answer.
const chaosPatience = 8 * time.Second

// chaosSilenceForever is the sink's silence for silent uploads: longer than
// any round.
const chaosSilenceForever = time.Minute

var callerSeq atomic.Uint64

type caller struct {
	id    uint64
	kind  string
	size  int64         // bytes the transfer should carry
	rate  int64         // bytes/s; 0: as fast as the tunnel goes
	delay time.Duration // start offset within the round; sink's silence for uploads
	stop  int64         // abort / no-read: bytes after which the caller gives up
	hold  time.Duration // no-read: how long the caller keeps the connection

	start, firstByte, readEnd  time.Time
	sent, got                  int64
	wantSHA, gotSHA            string
	readEOF                    bool  // the read side ended with a clean EOF
	readErr, writeErr, dialErr error // what the caller saw
	sink                       *sinkRecord
}

func (cl *caller) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d bytes", cl.size)
	if cl.rate > 0 {
		fmt.Fprintf(&b, " at %.0f MiB/s", float64(cl.rate)/(1<<20))
	}
	if cl.kind == kindUpload {
		fmt.Fprintf(&b, ", sink silent %s after EOF", cl.hold)
	}
	return b.String()
}

// mix draws the callers of one round.
func (c *chaos) mix() []*caller {
	var out []*caller
	add := func(kind string, size, rate int64, f func(*caller)) {
		cl := &caller{id: callerSeq.Add(1), kind: kind, size: size, rate: rate,
			delay: time.Duration(c.rng.IntN(1200)) * time.Millisecond}
		if f != nil {
			f(cl)
		}
		out = append(out, cl)
	}
	mb := func(lo, hi int) int64 { return int64(lo+c.rng.IntN(hi-lo+1)) << 20 }
	for range 3 {
		add(kindEcho, mb(2, 8), 4<<20, nil)
	}
	add(kindEcho, mb(16, 48), 0, func(cl *caller) { cl.delay /= 4 })
	for range 2 {
		add(kindDownload, mb(4, 8), 4<<20, nil)
	}
	add(kindDownload, mb(24, 48), 0, func(cl *caller) { cl.delay /= 4 })
	for range 2 {
		add(kindUpload, mb(2, 6), 4<<20, nil)
	}
	add(kindUpload, mb(8, 16), 0, nil)
	add(kindSilent, mb(1, 2), 4<<20, func(cl *caller) { cl.hold = chaosSilenceForever })
	add(kindNoRead, 4<<20, 0, func(cl *caller) { cl.hold = time.Duration(1000+c.rng.IntN(2000)) * time.Millisecond })
	add(kindNoReadDL, 64<<20, 0, func(cl *caller) { cl.hold = time.Duration(1000+c.rng.IntN(2000)) * time.Millisecond })
	add(kindAbort, 64<<20, 8<<20, func(cl *caller) { cl.stop = int64(64+c.rng.IntN(2048)) << 10 })
	add(kindAbortUp, 16<<20, 4<<20, func(cl *caller) { cl.stop = int64(64+c.rng.IntN(2048)) << 10 })
	// each upload gets its sink silence (the upstream says nothing while the
	// caller waits half-closed), drawn here so the seed replays it
	for _, cl := range out {
		if cl.kind == kindUpload {
			cl.hold = time.Duration(c.rng.IntN(1500)) * time.Millisecond
		}
	}
	return out
}

func (c *chaos) addr(listener string) string {
	for _, l := range chaosListeners {
		if l.Name == listener {
			return l.ServerAddr
		}
	}
	panic("no listener " + listener)
}

// runCaller runs one caller; every operation has a deadline.
func (c *chaos) runCaller(cl *caller) {
	time.Sleep(cl.delay)
	cl.start = time.Now()
	listener := map[string]string{kindEcho: "echo", kindNoRead: "echo", kindDownload: "source", kindAbort: "source",
		kindNoReadDL: "source", kindUpload: "sink", kindAbortUp: "sink", kindSilent: "sink"}[cl.kind]
	dctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	conn, err := c.pair.Cloud.DialContext(dctx, "tcp", c.addr(listener))
	cancel()
	if err != nil {
		cl.dialErr = err
		return
	}
	tc := conn.(*net.TCPConn)
	defer tc.Close()
	deadline := cl.start.Add(chaosCallerBound)
	_ = tc.SetDeadline(deadline)
	data := dataStream(c.seed, cl.id)

	switch cl.kind {
	case kindEcho:
		sent := sha256.New()
		werr := make(chan struct{})
		go func() {
			defer close(werr)
			cl.sent, cl.writeErr = writePaced(tc, data, cl.size, cl.rate, sent)
			if cl.writeErr == nil {
				cl.writeErr = tc.CloseWrite()
			}
		}()
		got := sha256.New()
		cl.got, cl.readEOF, cl.readErr = readAll(tc, got, -1, &cl.firstByte)
		cl.readEnd = time.Now()
		if !cl.readEOF || cl.got != cl.size {
			// unblock the writer at once, the way a real client gives up
			_ = tc.SetLinger(0)
			_ = tc.Close()
		}
		<-werr
		cl.wantSHA, cl.gotSHA = hex.EncodeToString(sent.Sum(nil)), hex.EncodeToString(got.Sum(nil))

	case kindDownload, kindAbort, kindNoReadDL:
		req := make([]byte, 24)
		binary.LittleEndian.PutUint64(req[0:], cl.id)
		binary.LittleEndian.PutUint64(req[8:], uint64(cl.size))
		binary.LittleEndian.PutUint64(req[16:], uint64(cl.rate))
		if _, cl.writeErr = tc.Write(req); cl.writeErr != nil {
			return
		}
		if cl.kind == kindNoReadDL {
			time.Sleep(cl.hold) // never reads; closing with unread data sends an RST
			return
		}
		got := sha256.New()
		limit := int64(-1)
		if cl.kind == kindAbort {
			limit = cl.stop
		}
		cl.got, cl.readEOF, cl.readErr = readAll(tc, got, limit, &cl.firstByte)
		cl.readEnd = time.Now()
		if cl.kind == kindAbort {
			_ = tc.SetLinger(0) // RST
			return
		}
		cl.gotSHA = hex.EncodeToString(got.Sum(nil))
		want := sha256.New()
		_, _ = io.CopyN(want, dataStream(c.seed, cl.id), cl.size)
		cl.wantSHA = hex.EncodeToString(want.Sum(nil))

	case kindUpload, kindAbortUp, kindSilent:
		hdr := make([]byte, 24)
		binary.LittleEndian.PutUint64(hdr[0:], cl.id)
		binary.LittleEndian.PutUint64(hdr[8:], uint64(cl.size))
		binary.LittleEndian.PutUint64(hdr[16:], uint64(cl.hold))
		sent := sha256.New()
		if _, cl.writeErr = tc.Write(hdr); cl.writeErr == nil {
			n := cl.size
			if cl.kind == kindAbortUp {
				n = cl.stop
			}
			cl.sent, cl.writeErr = writePaced(tc, data, n, cl.rate, sent)
		}
		if cl.kind == kindAbortUp {
			_ = tc.SetLinger(0) // RST mid-upload
			return
		}
		if cl.writeErr == nil {
			cl.writeErr = tc.CloseWrite()
		}
		if cl.writeErr != nil {
			return // the caller knows: its upload failed
		}
		cl.wantSHA = hex.EncodeToString(sent.Sum(nil))
		if cl.kind == kindSilent {
			_ = tc.SetReadDeadline(time.Now().Add(chaosPatience))
		}
		// the reply: sha256 of what sink read, and its byte count
		var reply [40]byte
		n, err := io.ReadFull(tc, reply[:])
		cl.got = int64(n)
		cl.readEnd = time.Now()
		switch {
		case err == nil:
			cl.gotSHA = hex.EncodeToString(reply[:32])
			if cnt := int64(binary.LittleEndian.Uint64(reply[32:])); cnt != cl.size {
				cl.gotSHA += fmt.Sprintf(" (sink counted %d bytes)", cnt)
			}
			// then the sink's FIN
			var one [1]byte
			if m, err := tc.Read(one[:]); m > 0 {
				cl.got += int64(m)
			} else if errors.Is(err, io.EOF) {
				cl.readEOF = true
			} else {
				cl.readErr = err
			}
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			cl.readEOF = true
		default:
			cl.readErr = err
		}
		if cl.readErr != nil {
			// give up with an RST: after our own FIN and with nothing
			// unread, a plain close would put nothing on the wire
			_ = tc.SetLinger(0)
		}

	case kindNoRead:
		_ = tc.SetWriteDeadline(cl.start.Add(cl.hold))
		cl.sent, cl.writeErr = writePaced(tc, data, cl.size, 0, nil)
		if rest := time.Until(cl.start.Add(cl.hold)); rest > 0 {
			time.Sleep(rest)
		}
		// closing with the echo unread sends an RST
	}
}

// judge classifies what a caller (and, for uploads, the sink) saw, and
// returns a problem when that breaks a guarantee.
func (c *chaos) judge(r *chaosRound, cl *caller) (outcome, problem string) {
	faultAt := r.faultTime()
	timedOut := func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
	// the sink side first: an upstream must never see a cut as a clean end
	if s := cl.sink; s != nil {
		switch {
		case s.state == "short-eof" && !(r.fault.killsClient && !faultAt.IsZero() && !s.end.Before(faultAt)):
			problem = fmt.Sprintf("the sink upstream saw a clean EOF after %d of the %d bytes declared: a cut passed on as a normal end", s.got, s.size)
		case s.state == "open" || (s.state == "complete" && cl.kind == kindSilent && !s.resetSilent && !s.end.IsZero()):
			problem = fmt.Sprintf("the sink upstream connection (state %s, %d of %d bytes read) was neither finished nor reset by the tunnel after the round", s.state, s.got, s.size)
		}
		if problem != "" {
			return "upstream-cut", problem
		}
	}
	switch cl.kind {
	case kindNoRead, kindNoReadDL:
		return "no-read", ""
	case kindAbort, kindAbortUp:
		if cl.kind == kindAbortUp && cl.sink != nil && cl.sink.state == "complete" {
			return "aborted", fmt.Sprintf("the sink upstream read a complete upload of %d bytes though the caller sent only %d and reset", cl.size, cl.sent)
		}
		return "aborted", ""
	}
	if cl.dialErr != nil {
		return "refused", ""
	}
	want := cl.size
	if cl.kind == kindUpload || cl.kind == kindSilent {
		want = 40 // the reply
	}
	if cl.kind == kindSilent && timedOut(cl.readErr) && cl.got == 0 {
		return "gave-up", "" // the silent sink never answered: expected
	}
	if !cl.readEOF && (timedOut(cl.readErr) || timedOut(cl.writeErr)) {
		return "hung", fmt.Sprintf("neither completed nor saw an error within %s: %d of %d bytes back (read: %v, write: %v)", chaosCallerBound, cl.got, want, cl.readErr, cl.writeErr)
	}
	if (cl.kind == kindUpload || cl.kind == kindSilent) && cl.writeErr != nil {
		return "broken", "" // the upload failed and the caller saw it
	}
	if cl.readEOF {
		switch {
		case cl.got == want && cl.gotSHA == cl.wantSHA && cl.writeErr == nil:
			return "intact", ""
		case cl.got < want:
			if errors.Is(cl.writeErr, syscall.ECONNRESET) {
				// A reset is reported once per socket: when the echo
				// caller's writer was blocked too, it may take the
				// ECONNRESET and leave the reader a plain EOF. The writer
				// gets ECONNRESET only for a reset that came before any
				// FIN (after a FIN it would be EPIPE), so the caller saw
				// a reset, not a clean end.
				return "broken", ""
			}
			if r.fault.killsServer && !faultAt.IsZero() && !cl.readEnd.Before(faultAt) {
				return "killed-eof", "" // the kernel's FIN of the SIGKILLed server
			}
			if cl.got == 0 {
				return "empty-eof", fmt.Sprintf("CLEAN EOF BEFORE ANY BYTE of the %d expected (connected %s the fault, EOF %s after connecting): a refused or broken connection must be reset, a clean empty answer reads as success",
					want, relative(cl.start, faultAt), since(cl.start, cl.readEnd))
			}
			return "short-eof", fmt.Sprintf("SHORT CLEAN EOF: got %d of %d bytes and io.EOF, no error (fault %s after start, EOF %s after start)",
				cl.got, want, since(cl.start, faultAt), since(cl.start, cl.readEnd))
		default:
			return "corrupted", fmt.Sprintf("CORRUPTED: got %d bytes (want %d), sha256 %s, want %s", cl.got, want, cl.gotSHA, cl.wantSHA)
		}
	}
	// an error: the caller knows the transfer broke. After a graceful stop a
	// transfer that was already flowing must not break.
	if r.fault.graceful && !cl.firstByte.IsZero() && !faultAt.IsZero() && cl.firstByte.Before(faultAt) {
		return "broken", fmt.Sprintf("was flowing when SIGTERM came (%d of %d bytes back) and broke (%v) instead of completing within the drain grace %s",
			cl.got, want, firstErr(cl.readErr, cl.writeErr), chaosDrainGrace)
	}
	return "broken", ""
}

// relative says when t was relative to ref: "120ms before" or "35ms after".
func relative(t, ref time.Time) string {
	if ref.IsZero() {
		return "without"
	}
	if t.Before(ref) {
		return ref.Sub(t).Round(time.Millisecond).String() + " before"
	}
	return t.Sub(ref).Round(time.Millisecond).String() + " after"
}

func since(a, b time.Time) string {
	if b.IsZero() {
		return "-"
	}
	return b.Sub(a).Round(time.Millisecond).String()
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// dataStream is the deterministic payload of caller id.
func dataStream(seed, id uint64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], id)
	return rand.NewChaCha8(s)
}

// writePaced writes n bytes of src to w at rate bytes/s (0: unpaced),
// hashing them into h when set.
func writePaced(w io.Writer, src io.Reader, n, rate int64, h hash.Hash) (int64, error) {
	buf := make([]byte, 32<<10)
	start := time.Now()
	var sent int64
	for sent < n {
		m := min(int64(len(buf)), n-sent)
		_, _ = io.ReadFull(src, buf[:m])
		k, err := w.Write(buf[:m])
		if h != nil {
			h.Write(buf[:k])
		}
		sent += int64(k)
		if err != nil {
			return sent, err
		}
		if rate > 0 {
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	return sent, nil
}

// readAll reads r into h until EOF, an error, or limit bytes (limit < 0: no
// limit); it records when the first byte came.
func readAll(r io.Reader, h hash.Hash, limit int64, first *time.Time) (n int64, eof bool, err error) {
	buf := make([]byte, 64<<10)
	for limit < 0 || n < limit {
		k, rerr := r.Read(buf)
		if k > 0 {
			if n == 0 {
				*first = time.Now()
			}
			h.Write(buf[:k])
			n += int64(k)
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return n, true, nil
			}
			return n, false, rerr
		}
	}
	return n, false, nil
}

// --- upstreams (home side) ----------------------------------------------------------

// upConn is one open upstream connection, for the settle check's message.
type upConn struct {
	kind  string
	since time.Time
	id    uint64 // the caller, once its header came
}

type sinkRecord struct {
	size, got   int64
	state       string // "open", "complete", "short-eof", "error"
	err         error
	end         time.Time
	resetSilent bool // reset while the sink was silent
}

// quiet waits d without writing to c, and reports early (true) when the
// connection was reset meanwhile. After the peer's FIN a read cannot see a
// reset (it keeps returning EOF), so the TCP state is polled instead.
func quiet(c *net.TCPConn, d time.Duration) (reset bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		time.Sleep(d)
		return false
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		var state uint8
		err := rc.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				state = info.State
			}
		})
		if err != nil || state == tcpStateClose {
			return true // reset, or closed by the test
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// tcpStateClose is TCP_CLOSE of the kernel's TCP states (include/net/tcp_states.h).
const tcpStateClose = 7

type upstreams struct {
	seed uint64 // the run's seed: source sends dataStream(seed, id)
	lns  []net.Listener
	mu   sync.Mutex
	open map[net.Conn]*upConn
	sink map[uint64]*sinkRecord
	wg   sync.WaitGroup
}

// startUpstreams listens in home: echo (echoes until EOF, then half-closes),
// source (a 24-byte request: id, size, rate; answers with the caller's
// deterministic bytes), sink (a 24-byte header: id, size, silence; reads
// until EOF, stays silent, then answers sha256 and count).
func startUpstreams(home *harness.Netns, seed uint64) (*upstreams, error) {
	u := &upstreams{seed: seed, open: map[net.Conn]*upConn{}, sink: map[uint64]*sinkRecord{}}
	serve := map[string]func(*net.TCPConn){"echo": u.echo, "source": u.source, "sink": u.sinkConn}
	for _, l := range chaosListeners {
		ln, err := home.Listen("tcp", l.Upstream)
		if err != nil {
			u.close()
			return nil, err
		}
		u.lns = append(u.lns, ln)
		fn := serve[l.Name]
		u.wg.Go(func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				tc := conn.(*net.TCPConn)
				u.mu.Lock()
				u.open[tc] = &upConn{kind: l.Name, since: time.Now()}
				u.mu.Unlock()
				u.wg.Go(func() {
					defer func() {
						_ = tc.Close()
						u.mu.Lock()
						delete(u.open, tc)
						u.mu.Unlock()
					}()
					// longer than any round: a connection the tunnel pins
					// shows up in the settle check first
					_ = tc.SetDeadline(time.Now().Add(2 * time.Minute))
					fn(tc)
				})
			}
		})
	}
	return u, nil
}

func (u *upstreams) close() {
	for _, ln := range u.lns {
		_ = ln.Close()
	}
	u.mu.Lock()
	for c := range u.open {
		_ = c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// closeAcceptedBefore closes the open upstream connections accepted before
// t (in a SIGKILL client round: all of them the killed client's).
func (u *upstreams) closeAcceptedBefore(t time.Time) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for c, uc := range u.open {
		if uc.since.Before(t) {
			_ = c.Close()
			n++
		}
	}
	return n
}

func (u *upstreams) openConns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.open)
}

func (u *upstreams) describeOpen() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var parts []string
	for _, uc := range u.open {
		d := fmt.Sprintf("%s for %s", uc.kind, time.Since(uc.since).Round(100*time.Millisecond))
		if uc.id != 0 {
			d += fmt.Sprintf(" (caller #%d", uc.id)
			if s := u.sink[uc.id]; s != nil {
				d += fmt.Sprintf(", sink %s after %d of %d bytes", s.state, s.got, s.size)
			}
			d += ")"
		} else {
			d += " (no header received)"
		}
		parts = append(parts, d)
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

func (u *upstreams) attachSink(cl *caller) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s, ok := u.sink[cl.id]; ok {
		cp := *s
		cl.sink = &cp
	}
}

func (u *upstreams) echo(c *net.TCPConn) {
	buf := make([]byte, 64<<10)
	if _, err := io.CopyBuffer(c, struct{ io.Reader }{c}, buf); err != nil {
		return
	}
	_ = c.CloseWrite()
	// wait for the other side to finish with the connection
	_, _ = io.Copy(io.Discard, c)
}

func (u *upstreams) source(c *net.TCPConn) {
	req := make([]byte, 24)
	if _, err := io.ReadFull(c, req); err != nil {
		return
	}
	id := binary.LittleEndian.Uint64(req[0:])
	u.mu.Lock()
	if uc := u.open[c]; uc != nil {
		uc.id = id
	}
	u.mu.Unlock()
	size := int64(binary.LittleEndian.Uint64(req[8:]))
	rate := int64(binary.LittleEndian.Uint64(req[16:]))
	if size < 0 || size > 1<<30 || rate < 0 {
		return
	}
	if _, err := writePaced(c, dataStream(u.seed, id), size, rate, nil); err != nil {
		return
	}
	_ = c.CloseWrite()
	_, _ = io.Copy(io.Discard, c)
}

func (u *upstreams) sinkConn(c *net.TCPConn) {
	hdr := make([]byte, 24)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return
	}
	id := binary.LittleEndian.Uint64(hdr[0:])
	rec := &sinkRecord{size: int64(binary.LittleEndian.Uint64(hdr[8:])), state: "open"}
	silence := time.Duration(binary.LittleEndian.Uint64(hdr[16:]))
	u.mu.Lock()
	u.sink[id] = rec
	if uc := u.open[c]; uc != nil {
		uc.id = id
	}
	u.mu.Unlock()
	set := func(f func()) {
		u.mu.Lock()
		defer u.mu.Unlock()
		f()
	}
	h := sha256.New()
	var first time.Time
	n, eof, err := readAll(c, h, -1, &first)
	set(func() {
		rec.got, rec.end = n, time.Now()
		switch {
		case !eof:
			rec.state, rec.err = "error", err
		case n != rec.size:
			rec.state = "short-eof"
		default:
			rec.state = "complete"
		}
	})
	if !eof || n != rec.size {
		return // a cut: nothing to answer
	}
	// the caller waits half-closed while the upstream says nothing; a reset
	// of the connection ends the silence (the tunnel gave up on it)
	if quiet(c, silence) {
		set(func() { rec.resetSilent = true })
		return
	}
	reply := make([]byte, 40)
	copy(reply, h.Sum(nil))
	binary.LittleEndian.PutUint64(reply[32:], uint64(n))
	if _, err := c.Write(reply); err != nil {
		return
	}
	_ = c.CloseWrite()
	_, _ = io.Copy(io.Discard, c)
}
