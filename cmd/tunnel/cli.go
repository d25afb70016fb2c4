package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
	"github.com/l5d-tunnel/l5d-tunnel/internal/tunnel"
)

// Exit codes: the shared ones of internal/cli.
const (
	exitOK      = cli.ExitOK
	exitFailure = cli.ExitFailure
	exitUsage   = cli.ExitUsage
)

const topLong = `tunnel: forwards named TCP listeners in a routable cluster to services in a
cluster without a public IP, over one outbound websocket (smux v2 streams).`

const serverLong = `Run in the routable (cloud) cluster: owns the listeners.

The websocket endpoint is /tunnel on --listen. /healthz, /readyz (200 only while
a client session is up) and /metrics are on --admin-addr.`

const serverExamples = `  # Listeners for the home API server, the Linkerd gateway and its probe port:
  tunnel server --listen :8080 --token-file /var/run/tunnel/token \
    --port api=:6443 --port gateway=:4143 --port probe=:4191 --admin-addr :9090

  # Terminate TLS on the websocket endpoint yourself (no ingress):
  TUNNEL_TOKEN=s3cret tunnel server --listen :8443 --tls-cert tls.crt --tls-key tls.key \
    --port gateway=:4143`

const clientLong = `Run in the home cluster: dials out, forwards to upstreams.

The client dials only the --upstream addresses; a stream naming any other
listener is refused. It reconnects forever with capped, jittered backoff.`

const clientExamples = `  # Dial the cloud ingress and expose the home API server and Linkerd gateway:
  tunnel client --server wss://tunnel.cloud.example.com/tunnel \
    --token-file /var/run/tunnel/token \
    --upstream api=kubernetes.default.svc:443 \
    --upstream gateway=linkerd-gateway.linkerd-multicluster.svc:4143 \
    --upstream probe=linkerd-gateway.linkerd-multicluster.svc:4191

  # Private CA on the server certificate:
  tunnel client --server wss://10.1.2.3:8443/tunnel --ca-file ca.crt --upstream gateway=127.0.0.1:4143`

// failed is returned by a command that already logged its runtime error:
// run exits 1 without printing it again. Every other error is a usage error.
type failed struct{ err error }

func (f failed) Error() string { return f.err.Error() }

// run executes the command line args and returns the exit code: 0, 1 on a
// runtime error, 2 on bad flags or configuration (the message names the
// flag). Help goes to stdout, errors to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	root := &cobra.Command{
		Use:     "tunnel",
		Short:   "Linkerd multicluster over one outbound websocket",
		Long:    topLong,
		Version: cli.Version,
		Example: `  tunnel server [flags]   run in the routable (cloud) cluster: owns the listeners
  tunnel client [flags]   run in the home cluster: dials out, forwards to upstreams
  tunnel version          print the version

  Run 'tunnel server --help' or 'tunnel client --help' for flags and examples.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(stderr, cmd.UsageString())
			return errors.New("a command is required (server, client or version)")
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetVersionTemplate("tunnel {{.Version}}\n")
	root.AddCommand(
		newCommand(ctx, "server", serverLong, serverExamples, getenv, stderr, serverCommand),
		newCommand(ctx, "client", clientLong, clientExamples, getenv, stderr, clientCommand),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  flagsOnly,
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintln(cmd.OutOrStdout(), "tunnel", cli.Version)
			},
		},
	)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetContext(ctx)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	var f failed
	if errors.As(err, &f) {
		return exitFailure
	}
	fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", cmd.CommandPath(), err, cmd.CommandPath())
	return exitUsage
}

// flagsOnly rejects positional arguments.
func flagsOnly(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q (flags only)", args[0])
	}
	return nil
}

// command is the body of `tunnel server` or `tunnel client`: it binds its
// flags and returns the function that validates and runs.
type command func(fs *pflag.FlagSet, lo *logOpts) func(ctx context.Context, getenv func(string) string, stderr io.Writer) error

func newCommand(ctx context.Context, name, long, examples string, getenv func(string) string, stderr io.Writer, c command) *cobra.Command {
	var lo logOpts
	cmd := &cobra.Command{
		Use:     name + " [flags]",
		Short:   strings.SplitN(long, "\n", 2)[0],
		Long:    long,
		Example: examples,
		Args:    flagsOnly,
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	body := c(fs, &lo)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return body(ctx, getenv, stderr)
	}
	return cmd
}

// endpoints is a repeatable NAME=ADDR flag, checked as it is parsed (pflag
// names the flag and the value in the error).
type endpoints struct {
	list *[]tunnel.Endpoint
}

func (e endpoints) String() string {
	parts := make([]string, 0, len(*e.list))
	for _, ep := range *e.list {
		parts = append(parts, ep.Name+"="+ep.Addr)
	}
	return strings.Join(parts, ",")
}

func (e endpoints) Set(s string) error {
	ep, err := tunnel.ParseEndpoint(s)
	if err != nil {
		return err
	}
	*e.list = append(*e.list, ep)
	return nil
}

func (e endpoints) Type() string { return "NAME=ADDR" }

// fieldFlags maps the fields of the tunnel's configuration to their flags.
var fieldFlags = map[string]string{
	"Listen":                    "--listen",
	"Ports":                     "--port",
	"TLSCert":                   "--tls-cert and --tls-key",
	"HandshakeTimeout":          "--handshake-timeout",
	"MaxPendingConns":           "--max-pending-conns",
	"ReplyTimeout":              "--reply-timeout",
	"TokenFile":                 "--token-file",
	"AdminAddr":                 "--admin-addr",
	"Session.KeepAliveInterval": "--keepalive-interval",
	"Session.KeepAliveTimeout":  "--keepalive-timeout",
	"Session.MaxFrameSize":      "--max-frame-size",
	"Session.MaxStreamWindow":   "--stream-window",
	"Session.SessionBudget":     "--session-window",
	"Session.MaxStreams":        "--max-streams",
	"Session.ReadBufferSize":    "--ws-read-buffer",
	"Session.WriteBufferSize":   "--ws-write-buffer",
	"Session":                   "session tuning (--keepalive-*, --stream-window, --session-window, --max-streams, --max-frame-size, --ws-*-buffer)",
	"CopyBufferSize":            "--copy-buffer",
	"DrainGrace":                "--drain-grace",
	"ServerURL":                 "--server",
	"Upstreams":                 "--upstream",
	"CAFile":                    "--ca-file",
	"DialTimeout":               "--dial-timeout",
	"HeaderTimeout":             "--header-timeout",
	"BackoffMin":                "--backoff-min",
	"BackoffMax":                "--backoff-max",
}

// flagError names the flag of a configuration field error.
func flagError(err error) error {
	var fe *tunnel.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	flag, ok := fieldFlags[fe.Field]
	if !ok {
		flag = fe.Field
	}
	return fmt.Errorf("%s: %s", flag, fe.Msg)
}

// maxProcs bounds --max-procs.
const maxProcs = 1024

type logOpts struct {
	format, level string
	maxProcs      int
}

func commonFlags(fs *pflag.FlagSet, c *tunnel.Common, lo *logOpts) {
	fs.StringVar(&c.TokenFile, "token-file", "", "file with the shared token (re-read on every handshake; default: env "+tunnel.TokenEnv+")")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "address for /healthz, /readyz and /metrics (empty: disabled)")
	fs.StringVar(&lo.format, "log-format", "json", "log format: json or text")
	fs.StringVar(&lo.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.Session.KeepAliveInterval, "keepalive-interval", c.Session.KeepAliveInterval, "send a keepalive data frame this often (keep it well under ingress idle timeouts)")
	fs.DurationVar(&c.Session.KeepAliveTimeout, "keepalive-timeout", c.Session.KeepAliveTimeout, "drop the session when the peer is silent this long")
	fs.IntVar(&c.Session.MaxFrameSize, "max-frame-size", c.Session.MaxFrameSize, "largest smux data frame in bytes (1024-65535)")
	fs.IntVar(&c.Session.MaxStreamWindow, "stream-window", c.Session.MaxStreamWindow, "largest receive window one stream may auto-tune to, in bytes (262144-268435456; a stream starts at 64 KiB, or 256 KiB with a plain smux v2 peer)")
	fs.IntVar(&c.Session.SessionBudget, "session-window", c.Session.SessionBudget, "per-session budget of receive windows in bytes; windows grow only within it (1048576-1073741824)")
	fs.IntVar(&c.Session.MaxStreams, "max-streams", c.Session.MaxStreams, "most streams open at once on one session, whichever side opens them; more are refused at once (1-65536)")
	fs.IntVar(&c.Session.ReadBufferSize, "ws-read-buffer", c.Session.ReadBufferSize, "websocket read buffer in bytes")
	fs.IntVar(&c.Session.WriteBufferSize, "ws-write-buffer", c.Session.WriteBufferSize, "websocket write buffer in bytes")
	fs.IntVar(&c.CopyBufferSize, "copy-buffer", c.CopyBufferSize, "pooled socket-to-stream copy buffer in bytes")
	fs.DurationVar(&c.DrainGrace, "drain-grace", c.DrainGrace, "on SIGTERM, how long open streams may finish before they are closed")
	fs.IntVar(&lo.maxProcs, "max-procs", 1, "GOMAXPROCS: OS threads running Go code at once; the relay is syscall-bound and one uses the least CPU per byte (0: Go's default; an explicit GOMAXPROCS env wins over the default)")
}

// setMaxProcs applies --max-procs unless the flag was left at its default
// and the GOMAXPROCS environment variable is set.
func setMaxProcs(fs *pflag.FlagSet, n int, getenv func(string) string) error {
	if n < 0 || n > maxProcs {
		return fmt.Errorf("--max-procs %d must be between 0 and %d", n, maxProcs)
	}
	if !fs.Changed("max-procs") && getenv("GOMAXPROCS") != "" {
		return nil
	}
	if n > 0 {
		runtime.GOMAXPROCS(n)
	}
	return nil
}

func serverFlags(cfg *tunnel.ServerConfig, lo *logOpts) *pflag.FlagSet {
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	bindServerFlags(fs, cfg, lo)
	return fs
}

func bindServerFlags(fs *pflag.FlagSet, cfg *tunnel.ServerConfig, lo *logOpts) {
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address of the websocket endpoint (path "+tunnel.TunnelPath+")")
	fs.Var(endpoints{&cfg.Ports}, "port", "named TCP listener NAME=ADDR, repeatable (e.g. gateway=:4143)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate for TLS on --listen (reloaded on change)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", cfg.HandshakeTimeout, "how long a connection to --listen may take for TLS and its request headers, and may idle, before it authenticates")
	fs.DurationVar(&cfg.ReplyTimeout, "reply-timeout", cfg.ReplyTimeout, "how long a client may take to answer a new stream before it is pinged; a client that answers neither is dropped and the connection moves to the next session")
	fs.IntVar(&cfg.MaxPendingConns, "max-pending-conns", cfg.MaxPendingConns, "unauthenticated connections to --listen held at once; more are closed at once")
	commonFlags(fs, &cfg.Common, lo)
}

func clientFlags(cfg *tunnel.ClientConfig, lo *logOpts) *pflag.FlagSet {
	fs := pflag.NewFlagSet("client", pflag.ContinueOnError)
	bindClientFlags(fs, cfg, lo)
	return fs
}

func bindClientFlags(fs *pflag.FlagSet, cfg *tunnel.ClientConfig, lo *logOpts) {
	fs.StringVar(&cfg.ServerURL, "server", "", "tunnel server URL, ws:// or wss:// with the path (e.g. wss://host/tunnel)")
	fs.Var(endpoints{&cfg.Upstreams}, "upstream", "NAME=HOST:PORT to dial for streams of listener NAME, repeatable")
	fs.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA bundle to verify a wss:// server (default: system roots)")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", cfg.DialTimeout, "timeout for each upstream dial")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", cfg.HandshakeTimeout, "timeout for connecting to the server")
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", cfg.HeaderTimeout, "how long a new stream may take to send its header")
	fs.DurationVar(&cfg.BackoffMin, "backoff-min", cfg.BackoffMin, "first reconnect delay")
	fs.DurationVar(&cfg.BackoffMax, "backoff-max", cfg.BackoffMax, "longest reconnect delay")
	commonFlags(fs, &cfg.Common, lo)
}

// serverCommand binds the flags of `tunnel server`.
func serverCommand(fs *pflag.FlagSet, lo *logOpts) func(context.Context, func(string) string, io.Writer) error {
	cfg := tunnel.DefaultServerConfig()
	bindServerFlags(fs, &cfg, lo)
	return runCommand(fs, lo, "server", &cfg.Common, func(log *slog.Logger) (runner, error) {
		return tunnel.NewServer(cfg, log)
	})
}

// clientCommand binds the flags of `tunnel client`.
func clientCommand(fs *pflag.FlagSet, lo *logOpts) func(context.Context, func(string) string, io.Writer) error {
	cfg := tunnel.DefaultClientConfig()
	bindClientFlags(fs, &cfg, lo)
	return runCommand(fs, lo, "client", &cfg.Common, func(log *slog.Logger) (runner, error) {
		return tunnel.NewClient(cfg, log)
	})
}

// runner is a tunnel server or client.
type runner interface{ Run(context.Context) error }

// runCommand is what `tunnel server` and `tunnel client` do once their flags
// are parsed: take the token from the environment unless a file names it,
// build the logger, build the role with newRole (config errors name the
// flag), apply --max-procs, and run until ctx ends.
func runCommand(fs *pflag.FlagSet, lo *logOpts, role string, common *tunnel.Common,
	newRole func(*slog.Logger) (runner, error)) func(context.Context, func(string) string, io.Writer) error {
	return func(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
		if common.TokenFile == "" {
			common.Token = getenv(tunnel.TokenEnv)
		}
		log, err := cli.NewLogger(stderr, lo.format, lo.level)
		if err != nil {
			return err
		}
		r, err := newRole(log)
		if err != nil {
			return flagError(err)
		}
		if err := setMaxProcs(fs, lo.maxProcs, getenv); err != nil {
			return err
		}
		if err := r.Run(ctx); err != nil {
			log.Error("tunnel "+role+" failed", "err", err)
			return failed{err}
		}
		return nil
	}
}
