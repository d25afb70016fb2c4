package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Pair is the tunnel alone, without control planes: a tunnel server in a
// "cloud" namespace and tunnel clients in a "home" namespace, joined by a veth
// pair whose home end can be taken down. The server's listeners and admin
// endpoint are on cloud's loopback, the clients' admin endpoints and the
// upstreams on home's loopback (cloud has no route to it). Plain ws://.
type Pair struct {
	Cfg                 PairConfig
	Cloud, Home         *Netns
	CloudVeth, HomeVeth string

	tokenFile string
	mu        sync.Mutex
	server    *Proc
	clients   []*Proc // every client started, by sequence number
}

// PairListener is one named listener: the server listens on ServerAddr (in
// cloud), the client forwards its streams to Upstream (in home).
type PairListener struct {
	Name, ServerAddr, Upstream string
}

// PairConfig chooses what a Pair runs.
type PairConfig struct {
	// Role distinguishes the namespaces from other topologies of the same
	// process: <NamePrefix><pid>-<Role>-cloud and -home.
	Role      string
	WorkDir   string // process logs and the token file
	TunnelBin string
	Listeners []PairListener
	// ServerArgs and ClientArgs are extra tunnel flags.
	ServerArgs, ClientArgs []string
}

// Addresses of a Pair.
const (
	PairCloudVethIP = "10.202.0.1"
	PairHomeVethIP  = "10.202.0.2"
	PairTunnelPort  = 8443
	PairServerAdmin = "127.0.0.1:9090" // in cloud
	pairClientAdmin = 9091             // + client sequence number, in home
)

// UpPair creates the namespaces and the veth pair and starts the server and
// one client, and waits until the session is up. On error the caller must
// still call Close.
func UpPair(ctx context.Context, cfg PairConfig) (*Pair, error) {
	p := &Pair{Cfg: cfg}
	if err := CheckPrivileges(); err != nil {
		return p, err
	}
	Sweep()
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return p, err
	}
	p.tokenFile = filepath.Join(cfg.WorkDir, "token")
	if err := os.WriteFile(p.tokenFile, []byte(randomHex(32)+"\n"), 0o600); err != nil {
		return p, err
	}
	var err error
	if p.Cloud, err = NewNetns(cfg.Role + "-cloud"); err != nil {
		return p, err
	}
	if p.Home, err = NewNetns(cfg.Role + "-home"); err != nil {
		return p, err
	}
	if p.CloudVeth, p.HomeVeth, err = Veth(p.Cloud, p.Home, PairCloudVethIP+"/24", PairHomeVethIP+"/24"); err != nil {
		return p, err
	}
	if err := p.StartServer(ctx); err != nil {
		return p, err
	}
	if _, _, err := p.StartClient(); err != nil {
		return p, err
	}
	return p, p.WaitReady(ctx, 30*time.Second)
}

// Close stops every process and removes the namespaces. Safe on a partly
// built Pair and more than once.
func (p *Pair) Close() {
	p.mu.Lock()
	procs := append([]*Proc{p.server}, p.clients...)
	p.mu.Unlock()
	for _, pr := range procs {
		if pr != nil {
			pr.Stop(5 * time.Second)
		}
	}
	for _, ns := range []*Netns{p.Cloud, p.Home} {
		if ns != nil {
			_ = ns.Delete()
		}
	}
}

// Server is the current tunnel server process.
func (p *Pair) Server() *Proc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.server
}

// Client is the client started with sequence number seq.
func (p *Pair) Client(seq int) *Proc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clients[seq]
}

// StartServer starts (or restarts) the tunnel server in cloud and waits for
// its /healthz.
func (p *Pair) StartServer(ctx context.Context) error {
	args := []string{"server",
		"--listen=" + net.JoinHostPort(PairCloudVethIP, strconv.Itoa(PairTunnelPort)),
		"--token-file=" + p.tokenFile,
		"--admin-addr=" + PairServerAdmin,
	}
	for _, l := range p.Cfg.Listeners {
		args = append(args, "--port="+l.Name+"="+l.ServerAddr)
	}
	args = append(args, p.Cfg.ServerArgs...)
	pr, err := StartProc(p.Cloud, p.Cfg.WorkDir, "cloud-tunnel-server", p.Cfg.TunnelBin, args, nil)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.server = pr
	p.mu.Unlock()
	return waitHTTP(ctx, p.Cloud, pr, "http://"+PairServerAdmin+"/healthz", 30*time.Second)
}

// StartClient starts one more client in home (its own admin port) and returns
// it with its sequence number. It does not wait for its session.
func (p *Pair) StartClient() (*Proc, int, error) {
	p.mu.Lock()
	seq := len(p.clients)
	p.clients = append(p.clients, nil)
	p.mu.Unlock()
	args := []string{"client",
		fmt.Sprintf("--server=ws://%s:%d/tunnel", PairCloudVethIP, PairTunnelPort),
		"--token-file=" + p.tokenFile,
		"--admin-addr=" + PairClientAdmin(seq),
	}
	for _, l := range p.Cfg.Listeners {
		args = append(args, "--upstream="+l.Name+"="+l.Upstream)
	}
	args = append(args, p.Cfg.ClientArgs...)
	pr, err := StartProc(p.Home, p.Cfg.WorkDir, fmt.Sprintf("home-tunnel-client-%d", seq), p.Cfg.TunnelBin, args, nil)
	if err != nil {
		return nil, seq, err
	}
	p.mu.Lock()
	p.clients[seq] = pr
	p.mu.Unlock()
	return pr, seq, nil
}

// PairClientAdmin is the admin address (in home) of the client with
// sequence number seq.
func PairClientAdmin(seq int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(pairClientAdmin+seq))
}

// WaitClientReady waits until client seq's /readyz says its session is up.
func (p *Pair) WaitClientReady(ctx context.Context, seq int, timeout time.Duration) error {
	return waitHTTP(ctx, p.Home, p.Client(seq), "http://"+PairClientAdmin(seq)+"/readyz", timeout)
}

// WaitReady waits until the server's /readyz says a client session is up.
func (p *Pair) WaitReady(ctx context.Context, timeout time.Duration) error {
	return waitHTTP(ctx, p.Cloud, p.Server(), "http://"+PairServerAdmin+"/readyz", timeout)
}

// SetLink takes home's end of the veth down or up.
func (p *Pair) SetLink(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return p.Home.IP("link", "set", p.HomeVeth, state)
}

// ServerMetrics scrapes the server's /metrics.
func (p *Pair) ServerMetrics(timeout time.Duration) (Metrics, error) {
	return ScrapeMetrics(p.Cloud, "http://"+PairServerAdmin+"/metrics", timeout)
}

// ClientMetrics scrapes client seq's /metrics.
func (p *Pair) ClientMetrics(seq int, timeout time.Duration) (Metrics, error) {
	return ScrapeMetrics(p.Home, "http://"+PairClientAdmin(seq)+"/metrics", timeout)
}

// Metrics are the samples of a Prometheus text exposition, keyed by the
// series as written (`name{label="v",...}`, or `name` without labels).
type Metrics map[string]float64

// Sum adds every series of the metric name (all label sets).
func (m Metrics) Sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// Has reports whether any series of the metric name is present.
func (m Metrics) Has(name string) bool {
	for k := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			return true
		}
	}
	return false
}

// ParseMetrics reads the Prometheus text format (comments skipped, the
// optional timestamp ignored).
func ParseMetrics(body string) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// the series ends at the closing brace of the labels, or at the
		// first space when there are none (label values may hold spaces)
		end := strings.IndexByte(line, ' ')
		if i := strings.IndexByte(line, '{'); i >= 0 && (end < 0 || i < end) {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics: bad line %q", line)
			}
			end = j + 1
		}
		if end <= 0 || end >= len(line) {
			return nil, fmt.Errorf("metrics: bad line %q", line)
		}
		fields := strings.Fields(line[end:])
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: bad value in %q: %w", line, err)
		}
		m[line[:end]] = v
	}
	return m, sc.Err()
}

// ScrapeMetrics fetches and parses url from inside ns.
func ScrapeMetrics(ns *Netns, url string, timeout time.Duration) (Metrics, error) {
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return ParseMetrics(string(body))
}

// StatusKB reads a "kB" field of /proc/<pid>/status (VmRSS, VmHWM, ...).
func (p *Proc) StatusKB(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		return strconv.ParseInt(v, 10, 64)
	}
	return 0, fmt.Errorf("%s: no %s in /proc/%d/status", p.Name, field, p.Pid())
}

// WaitExit waits up to d for the process to end and reports whether it did.
func (p *Proc) WaitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// ExitStatus describes how an ended process ended: "exit 0", "exit 2",
// "signal: killed"; "" while it runs.
func (p *Proc) ExitStatus() string {
	if !p.Exited() {
		return ""
	}
	var ee interface{ Sys() any }
	if p.waitErr == nil {
		return "exit 0"
	}
	if errors.As(p.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				return "signal: " + ws.Signal().String()
			}
			return "exit " + strconv.Itoa(ws.ExitStatus())
		}
	}
	return p.waitErr.Error()
}

// ClientOrNil is the client with sequence number seq, or nil when there is
// none (yet).
func (p *Pair) ClientOrNil(seq int) *Proc {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq < 0 || seq >= len(p.clients) {
		return nil
	}
	return p.clients[seq]
}
