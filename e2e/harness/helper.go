package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The harness runs its own executable (the test binary or the demo) inside a
// namespace with `ip netns exec` to act from there: real name resolution
// through /etc/netns/<ns>/hosts, real sockets of that namespace. The request
// travels in an environment variable, the answer comes back as JSON on stdout.
const helperEnv = "L5D_E2E_HELPER"

// LinkerdALPN is the protocol Linkerd's gateway requires on its inbound port.
const LinkerdALPN = "transport.l5d.io/v1"

// HelperRequest is one action to run inside a namespace.
type HelperRequest struct {
	Op string `json:"op"` // gateway, dial, kube, probe, mtls, check

	Addr    string        `json:"addr,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`

	// kube
	Kubeconfigs []string `json:"kubeconfigs,omitempty"`
	// probe
	URL string `json:"url,omitempty"`
	// mtls (client) and gateway (server)
	ServerName string `json:"serverName,omitempty"`
	CAFile     string `json:"caFile,omitempty"`
	CertFile   string `json:"certFile,omitempty"`
	KeyFile    string `json:"keyFile,omitempty"`
	// NoClientCert and ALPN (when set) make the mtls client misbehave, to
	// show the stand-in gateway refuses what Linkerd's gateway refuses.
	NoClientCert bool     `json:"noClientCert,omitempty"`
	ALPN         []string `json:"alpn,omitempty"`
	Bytes        int64    `json:"bytes,omitempty"`
	Streams      int      `json:"streams,omitempty"`
	// gateway
	ProbeAddr string `json:"probeAddr,omitempty"`
	// check: kube + probe + mtls until all pass or Timeout
	Interval time.Duration `json:"interval,omitempty"`
}

// Transfer is one echo transfer through the mTLS stand-in gateway.
type Transfer struct {
	Bytes    int64  `json:"bytes"`
	Received int64  `json:"received"`
	SentSHA  string `json:"sentSHA"`
	GotSHA   string `json:"gotSHA"`
	Err      string `json:"err,omitempty"`
}

// Intact reports a complete transfer whose echo matches what was sent.
func (t Transfer) Intact() bool {
	return t.Err == "" && t.Received == t.Bytes && t.SentSHA == t.GotSHA
}

// Corrupted reports a transfer whose data came back different without an
// error: the one outcome that must never happen.
func (t Transfer) Corrupted() bool {
	return t.Err == "" && (t.Received != t.Bytes || t.SentSHA != t.GotSHA)
}

// HelperResult is what a helper answers.
type HelperResult struct {
	Err string `json:"err,omitempty"`

	// kube
	Services      []string `json:"services,omitempty"`
	Server        string   `json:"server,omitempty"`
	TLSServerName string   `json:"tlsServerName,omitempty"`
	// probe
	Status int    `json:"status,omitempty"`
	Body   string `json:"body,omitempty"`
	// mtls
	ALPN       string     `json:"alpn,omitempty"`
	PeerNames  []string   `json:"peerNames,omitempty"`
	Transfers  []Transfer `json:"transfers,omitempty"`
	TLSVersion string     `json:"tlsVersion,omitempty"`
	// check
	Elapsed  time.Duration `json:"elapsed,omitempty"`
	Attempts int           `json:"attempts,omitempty"`
	// per-part outcome of check
	Parts map[string]string `json:"parts,omitempty"`
}

// HelperMain runs a helper request and exits when the process was started as
// a helper; otherwise it returns at once. Call it first in TestMain and main.
func HelperMain() {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		return
	}
	var req HelperRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		fmt.Fprintf(os.Stderr, "helper: bad request: %v\n", err)
		os.Exit(2)
	}
	if req.Op == "gateway" {
		if err := runGateway(req); err != nil {
			fmt.Fprintf(os.Stderr, "gateway: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	res := runHelper(context.Background(), req)
	_ = json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// RunHelper runs req inside ns and returns its answer.
func RunHelper(ctx context.Context, ns *Netns, req HelperRequest) (HelperResult, error) {
	self, err := os.Executable()
	if err != nil {
		return HelperResult{}, err
	}
	js, _ := json.Marshal(req)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, self)
	cmd.Env = append(os.Environ(), helperEnv+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return HelperResult{}, fmt.Errorf("helper %s in %s: %w: %s", req.Op, ns.Name, err, stderr.String())
	}
	var res HelperResult
	if err := json.Unmarshal(out, &res); err != nil {
		return HelperResult{}, fmt.Errorf("helper %s in %s: bad answer %q: %w", req.Op, ns.Name, out, err)
	}
	return res, nil
}

func runHelper(ctx context.Context, req HelperRequest) HelperResult {
	if req.Timeout == 0 {
		req.Timeout = 15 * time.Second
	}
	switch req.Op {
	case "dial":
		c, err := net.DialTimeout("tcp", req.Addr, req.Timeout)
		if err != nil {
			return HelperResult{Err: err.Error()}
		}
		c.Close()
		return HelperResult{}
	case "kube":
		return helperKube(ctx, req)
	case "probe":
		return helperProbe(ctx, req)
	case "mtls":
		return helperMTLS(ctx, req)
	case "check":
		return helperCheck(ctx, req)
	}
	return HelperResult{Err: "unknown helper op " + req.Op}
}

func helperKube(ctx context.Context, req HelperRequest) HelperResult {
	var res HelperResult
	for _, path := range req.Kubeconfigs {
		raw, err := os.ReadFile(path)
		if err != nil {
			return HelperResult{Err: err.Error()}
		}
		cfg, err := clientcmd.RESTConfigFromKubeConfig(raw)
		if err != nil {
			return HelperResult{Err: fmt.Sprintf("kubeconfig %s: %v", path, err)}
		}
		if cfg.Insecure {
			return HelperResult{Err: fmt.Sprintf("kubeconfig %s turns TLS verification off", path)}
		}
		cfg.Timeout = req.Timeout
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return HelperResult{Err: err.Error()}
		}
		list, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return HelperResult{Err: fmt.Sprintf("list services at %s (tls-server-name %q): %v", cfg.Host, cfg.TLSClientConfig.ServerName, err)}
		}
		res.Server, res.TLSServerName = cfg.Host, cfg.TLSClientConfig.ServerName
		res.Services = nil
		for _, s := range list.Items {
			res.Services = append(res.Services, s.Namespace+"/"+s.Name)
		}
		sort.Strings(res.Services)
	}
	return res
}

func helperProbe(ctx context.Context, req HelperRequest) HelperResult {
	ctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, req.URL, nil)
	if err != nil {
		return HelperResult{Err: err.Error()}
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := c.Do(hreq)
	if err != nil {
		return HelperResult{Err: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	res := HelperResult{Status: resp.StatusCode, Body: string(body)}
	if resp.StatusCode != http.StatusOK {
		res.Err = fmt.Sprintf("GET %s: %s", req.URL, resp.Status)
	}
	return res
}

func clientTLS(req HelperRequest) (*tls.Config, error) {
	ca, err := os.ReadFile(req.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", req.CAFile)
	}
	cfg := &tls.Config{
		ServerName: req.ServerName,
		RootCAs:    pool,
		NextProtos: []string{LinkerdALPN},
		MinVersion: tls.VersionTLS12,
	}
	if req.ALPN != nil {
		cfg.NextProtos = req.ALPN
	}
	if !req.NoClientCert {
		cert, err := tls.LoadX509KeyPair(req.CertFile, req.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func helperMTLS(ctx context.Context, req HelperRequest) HelperResult {
	cfg, err := clientTLS(req)
	if err != nil {
		return HelperResult{Err: err.Error()}
	}
	if req.Streams <= 0 {
		req.Streams = 1
	}
	if req.Bytes <= 0 {
		req.Bytes = 64 << 10
	}
	res := HelperResult{Transfers: make([]Transfer, req.Streams)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < req.Streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tr, state, err := echoTransfer(ctx, req, cfg)
			if err != nil {
				tr.Err = err.Error()
			}
			mu.Lock()
			defer mu.Unlock()
			res.Transfers[i] = tr
			if state != nil && res.ALPN == "" {
				res.ALPN = state.NegotiatedProtocol
				res.TLSVersion = tls.VersionName(state.Version)
				if len(state.PeerCertificates) > 0 {
					res.PeerNames = state.PeerCertificates[0].DNSNames
				}
			}
		}(i)
	}
	wg.Wait()
	for _, t := range res.Transfers {
		if t.Err != "" {
			res.Err = fmt.Sprintf("transfer of %d bytes: %s (after %d bytes back)", t.Bytes, t.Err, t.Received)
			break
		}
		if !t.Intact() {
			res.Err = fmt.Sprintf("transfer of %d bytes: %d came back, sha256 sent %s, received %s", t.Bytes, t.Received, t.SentSHA, t.GotSHA)
			break
		}
	}
	return res
}

// echoTransfer sends req.Bytes of random data through a fresh mTLS
// connection and reads the echo back concurrently, hashing both sides.
func echoTransfer(ctx context.Context, req HelperRequest, cfg *tls.Config) (Transfer, *tls.ConnectionState, error) {
	tr := Transfer{Bytes: req.Bytes}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: req.Timeout}, Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, req.Timeout)
	c, err := d.DialContext(dctx, "tcp", req.Addr)
	cancel()
	if err != nil {
		return tr, nil, fmt.Errorf("mTLS dial %s as %q: %w", req.Addr, req.ServerName, err)
	}
	conn := c.(*tls.Conn)
	defer conn.Close()
	state := conn.ConnectionState()
	if state.NegotiatedProtocol != LinkerdALPN {
		return tr, &state, fmt.Errorf("ALPN %q negotiated, want %q", state.NegotiatedProtocol, LinkerdALPN)
	}
	// generous deadline: a MiB a second at least
	_ = conn.SetDeadline(time.Now().Add(req.Timeout + time.Duration(req.Bytes>>20)*time.Second))
	sent, got := sha256.New(), sha256.New()
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		left := req.Bytes
		for left > 0 {
			n := int64(len(buf))
			if n > left {
				n = left
			}
			_, _ = rand.Read(buf[:n])
			sent.Write(buf[:n])
			if _, err := conn.Write(buf[:n]); err != nil {
				werr <- err
				return
			}
			left -= n
		}
		werr <- conn.CloseWrite()
	}()
	n, rerr := io.Copy(got, conn)
	tr.Received = n
	if err := <-werr; err != nil {
		return tr, &state, fmt.Errorf("send: %w", err)
	}
	if rerr != nil {
		return tr, &state, fmt.Errorf("receive: %w", rerr)
	}
	tr.SentSHA, tr.GotSHA = hex.EncodeToString(sent.Sum(nil)), hex.EncodeToString(got.Sum(nil))
	return tr, &state, nil
}

// CheckSpec describes assertions 2-4 for the check helper.
type CheckSpec struct {
	Kubeconfigs []string
	ProbeURL    string
	MTLS        HelperRequest // Op "mtls"
}

func helperCheck(ctx context.Context, req HelperRequest) HelperResult {
	if req.Interval == 0 {
		req.Interval = 250 * time.Millisecond
	}
	start := time.Now()
	deadline := start.Add(req.Timeout)
	var last HelperResult
	for attempt := 1; ; attempt++ {
		parts := map[string]string{}
		sub := HelperRequest{Timeout: 5 * time.Second}
		k := helperKube(ctx, HelperRequest{Kubeconfigs: req.Kubeconfigs, Timeout: sub.Timeout})
		parts["api"] = k.Err
		p := helperProbe(ctx, HelperRequest{URL: req.URL, Timeout: sub.Timeout})
		parts["probe"] = p.Err
		m := helperMTLS(ctx, HelperRequest{Addr: req.Addr, ServerName: req.ServerName, CAFile: req.CAFile,
			CertFile: req.CertFile, KeyFile: req.KeyFile, Bytes: 16 << 10, Streams: 1, Timeout: sub.Timeout})
		parts["gateway"] = m.Err
		last = HelperResult{Parts: parts, Attempts: attempt, Elapsed: time.Since(start)}
		if k.Err == "" && p.Err == "" && m.Err == "" {
			return last
		}
		if time.Now().After(deadline) {
			var errs []string
			for _, n := range []string{"api", "probe", "gateway"} {
				if parts[n] != "" {
					errs = append(errs, n+": "+parts[n])
				}
			}
			last.Err = "not all of api/probe/gateway work after " + req.Timeout.String() + ": " + strings.Join(errs, "; ")
			return last
		}
		time.Sleep(req.Interval)
	}
}

// runGateway is the stand-in for the home Linkerd gateway: an mTLS server on
// the proxy port that requires a client certificate from the identity trust
// anchor and ALPN transport.l5d.io/v1 and echoes what it reads; and the
// admin port's unauthenticated /ready and /live.
func runGateway(req HelperRequest) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ca, err := os.ReadFile(req.CAFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("no certificate in %s", req.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(req.CertFile, req.KeyFile)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{LinkerdALPN},
		MinVersion:   tls.VersionTLS12,
	}
	ln, err := net.Listen("tcp", req.Addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ready\n") })
	mux.HandleFunc("/live", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "live\n") })
	hs := &http.Server{Addr: req.ProbeAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	pln, err := net.Listen("tcp", req.ProbeAddr)
	if err != nil {
		return err
	}
	go func() { _ = hs.Serve(pln) }()
	log.Info("stand-in gateway listening", "proxy", req.Addr, "admin", req.ProbeAddr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); ln.Close(); hs.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			continue
		}
		go serveGatewayConn(log, tls.Server(c, cfg))
	}
}

func serveGatewayConn(log *slog.Logger, c *tls.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		log.Info("handshake refused", "remote", c.RemoteAddr().String(), "err", err.Error())
		return
	}
	st := c.ConnectionState()
	if st.NegotiatedProtocol != LinkerdALPN {
		log.Info("refused: no transport header protocol", "alpn", st.NegotiatedProtocol)
		return
	}
	var id []string
	if len(st.PeerCertificates) > 0 {
		id = st.PeerCertificates[0].DNSNames
	}
	_ = c.SetDeadline(time.Time{})
	n, err := io.Copy(c, c)
	_ = c.CloseWrite()
	attrs := []any{"remote", c.RemoteAddr().String(), "client_identity", id, "bytes", n}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	log.Info("echo done", attrs...)
}
