package tunnel

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

// TokenEnv is the environment variable read when no token file is given.
const TokenEnv = "TUNNEL_TOKEN"

// TunnelPath is the websocket endpoint on the server's --listen address.
const TunnelPath = "/tunnel"

// Endpoint is a named address: a server listener (--port NAME=ADDR) or a
// client upstream (--upstream NAME=HOST:PORT).
type Endpoint struct {
	Name string
	Addr string
}

// ParseEndpoint parses NAME=ADDR. flag is used in error messages.
func ParseEndpoint(flag, s string) (Endpoint, error) {
	name, addr, ok := strings.Cut(s, "=")
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %s %q: want NAME=ADDR", ErrConfig, flag, s)
	}
	if err := smux.ValidateListenerName(name); err != nil {
		return Endpoint{}, fmt.Errorf("%w: %s %q: %v", ErrConfig, flag, s, err)
	}
	if _, _, err := cli.SplitHostPort(addr); err != nil {
		return Endpoint{}, fmt.Errorf("%w: %s %q: %v", ErrConfig, flag, s, err)
	}
	return Endpoint{Name: name, Addr: addr}, nil
}

func validateEndpoints(flag string, eps []Endpoint, needHost bool) error {
	if len(eps) == 0 {
		return fmt.Errorf("%w: at least one %s NAME=ADDR is required", ErrConfig, flag)
	}
	seen := map[string]bool{}
	for _, e := range eps {
		if _, err := ParseEndpoint(flag, e.Name+"="+e.Addr); err != nil {
			return err
		}
		if needHost {
			host, port, _ := net.SplitHostPort(e.Addr)
			if host == "" || port == "0" {
				return fmt.Errorf("%w: %s %s=%s: needs a host and a non-zero port", ErrConfig, flag, e.Name, e.Addr)
			}
		}
		if seen[e.Name] {
			return fmt.Errorf("%w: %s: name %q given twice", ErrConfig, flag, e.Name)
		}
		seen[e.Name] = true
	}
	return nil
}

// Common holds settings shared by server and client.
type Common struct {
	// TokenFile holds the shared token (first non-empty line for the client;
	// every non-empty line is accepted by the server, to allow rotation). It
	// is re-read on every handshake. Empty: use Token.
	TokenFile string
	// Token is the token from TUNNEL_TOKEN, used when TokenFile is empty.
	Token string
	// AdminAddr serves /healthz, /readyz and /metrics. Empty disables it.
	AdminAddr string
	// Session tunes smux and the websocket connection.
	Session smux.Config
	// DrainGrace is how long open streams may finish after SIGTERM.
	DrainGrace time.Duration
	// CopyBufferSize is the size of the pooled buffers that copy from TCP
	// sockets into streams.
	CopyBufferSize int
}

func defaultCommon() Common {
	return Common{
		AdminAddr:      ":9090",
		Session:        smux.DefaultConfig(),
		DrainGrace:     20 * time.Second,
		CopyBufferSize: 256 << 10,
	}
}

// Bounds of the size, count and duration settings. A value outside them is
// a configuration error (exit 2) naming the flag: each of these settings
// sizes memory or time that a peer or the operator can make the process
// spend, and an absurd value (a 1 TB websocket buffer) must not get as far
// as an allocation. The bounds of the session's sizes and counts are
// pkg/smux's (Config.Validate); these are the tunnel's own.
const (
	MinKeepAliveInterval = 100 * time.Millisecond
	MaxKeepAliveInterval = 5 * time.Minute
	MaxKeepAliveTimeout  = time.Hour
	MinCopyBuffer        = 4 << 10
	MaxCopyBuffer        = 4 << 20
	MaxDrainGrace        = time.Hour
	MinClientTimeout     = 10 * time.Millisecond
	MaxClientTimeout     = 5 * time.Minute
	MinBackoff           = time.Millisecond
	MaxBackoff           = time.Hour
	MaxPendingConns      = 100000
	MinReplyTimeout      = 100 * time.Millisecond
	MaxReplyTimeout      = time.Minute
)

// checkInt and checkDuration report a value outside [lo, hi], naming flag.
func checkInt(flag string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%w: %s %d must be between %d and %d", ErrConfig, flag, v, lo, hi)
	}
	return nil
}

func checkDuration(flag string, v, lo, hi time.Duration) error {
	if v < lo || v > hi {
		return fmt.Errorf("%w: %s %v must be between %v and %v", ErrConfig, flag, v, lo, hi)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (c Common) validate() error {
	if c.TokenFile == "" && c.Token == "" {
		return fmt.Errorf("%w: --token-file or %s is required", ErrConfig, TokenEnv)
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			return fmt.Errorf("%w: --admin-addr %q: %v", ErrConfig, c.AdminAddr, err)
		}
	}
	s := c.Session
	if err := firstErr(
		checkDuration("--keepalive-interval", s.KeepAliveInterval, MinKeepAliveInterval, MaxKeepAliveInterval),
		checkDuration("--keepalive-timeout", s.KeepAliveTimeout, 2*s.KeepAliveInterval, MaxKeepAliveTimeout),
		checkSession("--max-frame-size", func(d *smux.Config) { d.MaxFrameSize = s.MaxFrameSize }),
		checkSession("--stream-window", func(d *smux.Config) { d.MaxStreamWindow = s.MaxStreamWindow }),
		checkSession("--session-window", func(d *smux.Config) { d.SessionBudget = s.SessionBudget }),
		checkSession("--max-streams", func(d *smux.Config) { d.MaxStreams = s.MaxStreams }),
		checkSession("--ws-read-buffer", func(d *smux.Config) { d.ReadBufferSize = s.ReadBufferSize }),
		checkSession("--ws-write-buffer", func(d *smux.Config) { d.WriteBufferSize = s.WriteBufferSize }),
		checkInt("--copy-buffer", c.CopyBufferSize, MinCopyBuffer, MaxCopyBuffer),
		checkDuration("--drain-grace", c.DrainGrace, 0, MaxDrainGrace),
	); err != nil {
		return err
	}
	if err := c.Session.Validate(); err != nil {
		return fmt.Errorf("%w: session tuning (--keepalive-*, --stream-window, --session-window, --max-streams, --max-frame-size, --ws-*-buffer): %v", ErrConfig, err)
	}
	return nil
}

// checkSession checks one session setting against pkg/smux's bounds: set
// copies it into the defaults, so an error names flag alone.
func checkSession(flag string, set func(*smux.Config)) error {
	d := smux.DefaultConfig()
	set(&d)
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrConfig, flag, err)
	}
	return nil
}

// ServerConfig configures `tunnel server`.
type ServerConfig struct {
	Common
	// Listen is the HTTP(S) address of the websocket endpoint (path /tunnel).
	Listen string
	// Ports are the named TCP listeners (--port NAME=ADDR).
	Ports []Endpoint
	// TLSCert and TLSKey enable TLS on Listen; both or neither. They are
	// reloaded when the files change.
	TLSCert, TLSKey string
	// HandshakeTimeout bounds how long a connection to the websocket
	// endpoint may take for its TLS handshake and request headers, and how
	// long it may idle between requests before it authenticates.
	HandshakeTimeout time.Duration
	// MaxPendingConns bounds the connections held before they
	// authenticate; more are closed at once.
	MaxPendingConns int
	// ReplyTimeout is how long the server waits for the client's status
	// byte for a new stream before it pings the client (up to twice as
	// long) and, if that fails too, drops the session and moves the
	// connection to the next live session.
	ReplyTimeout time.Duration
}

// DefaultServerConfig returns the defaults of `tunnel server`.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{Common: defaultCommon(), Listen: ":8080", HandshakeTimeout: 10 * time.Second, MaxPendingConns: 256,
		ReplyTimeout: time.Second}
}

// Validate reports the first problem, naming the flag.
func (c ServerConfig) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: --listen %q: %v", ErrConfig, c.Listen, err)
	}
	if err := validateEndpoints("--port", c.Ports, false); err != nil {
		return err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("%w: --tls-cert and --tls-key must be given together", ErrConfig)
	}
	if err := firstErr(
		checkDuration("--handshake-timeout", c.HandshakeTimeout, MinClientTimeout, MaxClientTimeout),
		checkInt("--max-pending-conns", c.MaxPendingConns, 1, MaxPendingConns),
		checkDuration("--reply-timeout", c.ReplyTimeout, MinReplyTimeout, MaxReplyTimeout),
	); err != nil {
		return err
	}
	return c.Common.validate()
}

// ClientConfig configures `tunnel client`.
type ClientConfig struct {
	Common
	// ServerURL is ws:// or wss:// with the path, e.g. wss://tunnel.example.com/tunnel.
	ServerURL string
	// Upstreams maps listener names to the only addresses the client dials.
	Upstreams []Endpoint
	// CAFile holds PEM roots for wss:// (default: system roots).
	CAFile string
	// DialTimeout bounds each upstream dial.
	DialTimeout time.Duration
	// HandshakeTimeout bounds connecting to the server (TCP, TLS, upgrade).
	HandshakeTimeout time.Duration
	// HeaderTimeout bounds the wait for a new stream's header.
	HeaderTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential reconnect delay.
	BackoffMin, BackoffMax time.Duration
}

// DefaultClientConfig returns the defaults of `tunnel client`.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{
		Common:           defaultCommon(),
		DialTimeout:      10 * time.Second,
		HandshakeTimeout: 15 * time.Second,
		HeaderTimeout:    10 * time.Second,
		BackoffMin:       250 * time.Millisecond,
		BackoffMax:       30 * time.Second,
	}
}

// Validate reports the first problem, naming the flag.
func (c ClientConfig) Validate() error {
	u, err := url.Parse(c.ServerURL)
	if c.ServerURL == "" {
		return fmt.Errorf("%w: --server is required (ws://HOST:PORT/tunnel or wss://...)", ErrConfig)
	}
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("%w: --server %q: want ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH", ErrConfig, c.ServerURL)
	}
	if u.User != nil {
		return fmt.Errorf("%w: --server: credentials in the URL are not allowed; use --token-file", ErrConfig)
	}
	if err := validateEndpoints("--upstream", c.Upstreams, true); err != nil {
		return err
	}
	if c.CAFile != "" && u.Scheme != "wss" {
		return fmt.Errorf("%w: --ca-file needs a wss:// --server", ErrConfig)
	}
	if err := firstErr(
		checkDuration("--dial-timeout", c.DialTimeout, MinClientTimeout, MaxClientTimeout),
		checkDuration("--handshake-timeout", c.HandshakeTimeout, MinClientTimeout, MaxClientTimeout),
		checkDuration("--header-timeout", c.HeaderTimeout, MinClientTimeout, MaxClientTimeout),
		checkDuration("--backoff-min", c.BackoffMin, MinBackoff, MaxBackoff),
		checkDuration("--backoff-max", c.BackoffMax, c.BackoffMin, MaxBackoff),
	); err != nil {
		return err
	}
	return c.Common.validate()
}
