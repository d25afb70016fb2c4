package tunnel

import (
	"errors"
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

// FieldError is a configuration problem with one field, named by its Go
// path in the configuration (e.g. "Session.MaxFrameSize"). It knows no flag
// names: the command line maps Field to its flag. It wraps ErrConfig.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap makes every FieldError an ErrConfig.
func (e *FieldError) Unwrap() error { return ErrConfig }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// ParseEndpoint parses NAME=ADDR.
func ParseEndpoint(s string) (Endpoint, error) {
	name, addr, ok := strings.Cut(s, "=")
	if !ok {
		return Endpoint{}, errors.New("want NAME=ADDR")
	}
	if err := smux.ValidateListenerName(name); err != nil {
		return Endpoint{}, err
	}
	if _, _, err := cli.SplitHostPort(addr); err != nil {
		return Endpoint{}, err
	}
	return Endpoint{Name: name, Addr: addr}, nil
}

func validateEndpoints(field string, eps []Endpoint, needHost bool) error {
	if len(eps) == 0 {
		return fieldErr(field, "at least one NAME=ADDR is required")
	}
	seen := map[string]bool{}
	for _, e := range eps {
		if _, err := ParseEndpoint(e.Name + "=" + e.Addr); err != nil {
			return fieldErr(field, "%q: %v", e.Name+"="+e.Addr, err)
		}
		if needHost {
			host, port, _ := net.SplitHostPort(e.Addr)
			if host == "" || port == "0" {
				return fieldErr(field, "%s=%s: needs a host and a non-zero port", e.Name, e.Addr)
			}
		}
		if seen[e.Name] {
			return fieldErr(field, "name %q given twice", e.Name)
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

// checkInt and checkDuration report a value outside [lo, hi] of field.
func checkInt(field string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fieldErr(field, "%d must be between %d and %d", v, lo, hi)
	}
	return nil
}

func checkDuration(field string, v, lo, hi time.Duration) error {
	if v < lo || v > hi {
		return fieldErr(field, "%v must be between %v and %v", v, lo, hi)
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
		return fieldErr("TokenFile", "required, or the token in $%s", TokenEnv)
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			return fieldErr("AdminAddr", "%q: %v", c.AdminAddr, err)
		}
	}
	s := c.Session
	if err := firstErr(
		checkDuration("Session.KeepAliveInterval", s.KeepAliveInterval, MinKeepAliveInterval, MaxKeepAliveInterval),
		checkDuration("Session.KeepAliveTimeout", s.KeepAliveTimeout, 2*s.KeepAliveInterval, MaxKeepAliveTimeout),
		checkSession("Session.MaxFrameSize", func(d *smux.Config) { d.MaxFrameSize = s.MaxFrameSize }),
		checkSession("Session.MaxStreamWindow", func(d *smux.Config) { d.MaxStreamWindow = s.MaxStreamWindow }),
		checkSession("Session.SessionBudget", func(d *smux.Config) { d.SessionBudget = s.SessionBudget }),
		checkSession("Session.MaxStreams", func(d *smux.Config) { d.MaxStreams = s.MaxStreams }),
		checkSession("Session.ReadBufferSize", func(d *smux.Config) { d.ReadBufferSize = s.ReadBufferSize }),
		checkSession("Session.WriteBufferSize", func(d *smux.Config) { d.WriteBufferSize = s.WriteBufferSize }),
		checkInt("CopyBufferSize", c.CopyBufferSize, MinCopyBuffer, MaxCopyBuffer),
		checkDuration("DrainGrace", c.DrainGrace, 0, MaxDrainGrace),
	); err != nil {
		return err
	}
	if err := c.Session.Validate(); err != nil {
		return fieldErr("Session", "%v", err)
	}
	return nil
}

// checkSession checks one session setting against pkg/smux's bounds: set
// copies it into the defaults, so an error names field alone.
func checkSession(field string, set func(*smux.Config)) error {
	d := smux.DefaultConfig()
	set(&d)
	if err := d.Validate(); err != nil {
		return fieldErr(field, "%v", err)
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

// Validate reports the first problem as a *FieldError.
func (c ServerConfig) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fieldErr("Listen", "%q: %v", c.Listen, err)
	}
	if err := validateEndpoints("Ports", c.Ports, false); err != nil {
		return err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fieldErr("TLSCert", "the certificate and the key must be given together")
	}
	if err := firstErr(
		checkDuration("HandshakeTimeout", c.HandshakeTimeout, MinClientTimeout, MaxClientTimeout),
		checkInt("MaxPendingConns", c.MaxPendingConns, 1, MaxPendingConns),
		checkDuration("ReplyTimeout", c.ReplyTimeout, MinReplyTimeout, MaxReplyTimeout),
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

// Validate reports the first problem as a *FieldError.
func (c ClientConfig) Validate() error {
	u, err := url.Parse(c.ServerURL)
	if c.ServerURL == "" {
		return fieldErr("ServerURL", "required (ws://HOST:PORT/tunnel or wss://...)")
	}
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fieldErr("ServerURL", "%q: want ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH", c.ServerURL)
	}
	if u.User != nil {
		return fieldErr("ServerURL", "credentials in the URL are not allowed; use a token file")
	}
	if err := validateEndpoints("Upstreams", c.Upstreams, true); err != nil {
		return err
	}
	if c.CAFile != "" && u.Scheme != "wss" {
		return fieldErr("CAFile", "needs a wss:// server URL")
	}
	if err := firstErr(
		checkDuration("DialTimeout", c.DialTimeout, MinClientTimeout, MaxClientTimeout),
		checkDuration("HandshakeTimeout", c.HandshakeTimeout, MinClientTimeout, MaxClientTimeout),
		checkDuration("HeaderTimeout", c.HeaderTimeout, MinClientTimeout, MaxClientTimeout),
		checkDuration("BackoffMin", c.BackoffMin, MinBackoff, MaxBackoff),
		checkDuration("BackoffMax", c.BackoffMax, c.BackoffMin, MaxBackoff),
	); err != nil {
		return err
	}
	return c.Common.validate()
}
