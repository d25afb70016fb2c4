package tunnel

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

// Reasons a connection or stream is refused besides the replies of
// pkg/smux (smux.Refusals, labelled by smux.Reply.String): the reason label
// of l5d_tunnel_refused_streams_total.
const (
	reasonNoSession        = "no_session"        // server: no client session for a caller
	reasonOpenFailed       = "open_failed"       // server: the stream could not be opened or tracked
	reasonUnexpectedStream = "unexpected_stream" // server: the client opened a stream
	reasonStreamLimit      = "stream_limit"      // either side: over --max-streams
)

// refusalReasons is the one list of refusal reasons; each is exported as a
// zero series from the start.
func refusalReasons() []string {
	rs := []string{reasonNoSession, reasonOpenFailed}
	for _, r := range smux.Refusals() {
		rs = append(rs, r.String())
	}
	return append(rs, reasonUnexpectedStream, reasonStreamLimit)
}

// Direction label values of l5d_tunnel_bytes_total, relative to the local
// TCP socket of the process: on the server the listener's caller, on the
// client the upstream.
const (
	dirIn  = "in"  // read from the local socket, sent into the tunnel
	dirOut = "out" // received from the tunnel, written to the local socket
)

// metrics are per Server/Client instance (own registry), so several can run
// in one process (tests) without clashing.
type metrics struct {
	reg           *prometheus.Registry
	ready         prometheus.Gauge
	sessions      prometheus.Gauge
	sessionsTotal prometheus.Counter
	reconnects    prometheus.Counter
	connectErrors *prometheus.CounterVec
	authFailures  prometheus.Counter
	streamsOpen   *prometheus.GaugeVec
	streamsTotal  *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	dialErrors    *prometheus.CounterVec
	refused       *prometheus.CounterVec
	// server only
	pendingRejected prometheus.Counter
}

func newMetrics(role string, listeners []string) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) prometheus.Collector { reg.MustRegister(c); return c }
	cl := prometheus.Labels{"role": role}
	m := &metrics{reg: reg}
	m.ready = f(prometheus.NewGauge(prometheus.GaugeOpts{Name: "l5d_tunnel_ready", ConstLabels: cl,
		Help: "1 while /readyz answers 200 (a session is up and the process is not draining)."})).(prometheus.Gauge)
	m.sessions = f(prometheus.NewGauge(prometheus.GaugeOpts{Name: "l5d_tunnel_sessions", ConstLabels: cl,
		Help: "Tunnel sessions currently up."})).(prometheus.Gauge)
	m.sessionsTotal = f(prometheus.NewCounter(prometheus.CounterOpts{Name: "l5d_tunnel_sessions_total", ConstLabels: cl,
		Help: "Tunnel sessions established."})).(prometheus.Counter)
	m.reconnects = f(prometheus.NewCounter(prometheus.CounterOpts{Name: "l5d_tunnel_reconnects_total", ConstLabels: cl,
		Help: "Client: sessions established after an earlier session or attempt was lost. Server: sessions that replaced an older session of the same client."})).(prometheus.Counter)
	m.connectErrors = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "l5d_tunnel_connect_errors_total", ConstLabels: cl,
		Help: "Client: failed attempts to establish a session, by reason (dial, unauthorized, handshake, token)."}, []string{"reason"})).(*prometheus.CounterVec)
	m.authFailures = f(prometheus.NewCounter(prometheus.CounterOpts{Name: "l5d_tunnel_auth_failures_total", ConstLabels: cl,
		Help: "Server: handshakes rejected with 401. Client: 401 answers received."})).(prometheus.Counter)
	m.streamsOpen = f(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "l5d_tunnel_streams_open", ConstLabels: cl,
		Help: "Streams currently forwarding, by listener."}, []string{"listener"})).(*prometheus.GaugeVec)
	m.streamsTotal = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "l5d_tunnel_streams_total", ConstLabels: cl,
		Help: "Streams that started forwarding, by listener."}, []string{"listener"})).(*prometheus.CounterVec)
	m.bytes = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "l5d_tunnel_bytes_total", ConstLabels: cl,
		Help: "Payload bytes by listener; direction=in: read from the local socket (server: the caller; client: the upstream), out: written to it."}, []string{"listener", "direction"})).(*prometheus.CounterVec)
	m.dialErrors = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "l5d_tunnel_dial_errors_total", ConstLabels: cl,
		Help: "Upstream dials that failed, by listener (client: its own dials; server: failures the client reported)."}, []string{"listener"})).(*prometheus.CounterVec)
	m.refused = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "l5d_tunnel_refused_streams_total", ConstLabels: cl,
		Help: "Connections or streams refused, by reason (" + strings.Join(refusalReasons(), ", ") + "); stream_limit: over --max-streams."}, []string{"reason"})).(*prometheus.CounterVec)
	m.pendingRejected = prometheus.NewCounter(prometheus.CounterOpts{Name: "l5d_tunnel_pending_conns_rejected_total", ConstLabels: cl,
		Help: "Server: connections to the websocket endpoint closed at once because --max-pending-conns unauthenticated connections were held."})
	if role == "server" {
		reg.MustRegister(m.pendingRejected)
	}
	for _, r := range refusalReasons() {
		m.refused.WithLabelValues(r)
	}
	for _, l := range listeners {
		m.streamsOpen.WithLabelValues(l)
		m.streamsTotal.WithLabelValues(l)
		m.bytes.WithLabelValues(l, dirIn)
		m.bytes.WithLabelValues(l, dirOut)
		m.dialErrors.WithLabelValues(l)
	}
	return m
}

// pendingFunc exports the number of unauthenticated connections held by
// the server's websocket endpoint.
func (m *metrics) pendingFunc(f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "l5d_tunnel_pending_conns",
		ConstLabels: prometheus.Labels{"role": "server"},
		Help:        "Server: connections to the websocket endpoint not (yet) authenticated: in the TLS handshake, sending a request, or idle between requests."}, f))
}

// listenerMetrics are the per-listener series, resolved once per listener.
type listenerMetrics struct {
	name     string
	open     prometheus.Gauge
	total    prometheus.Counter
	in, out  prometheus.Counter
	dialErrs prometheus.Counter
}

func (m *metrics) listener(name string) *listenerMetrics {
	return &listenerMetrics{
		name:     name,
		open:     m.streamsOpen.WithLabelValues(name),
		total:    m.streamsTotal.WithLabelValues(name),
		in:       m.bytes.WithLabelValues(name, dirIn),
		out:      m.bytes.WithLabelValues(name, dirOut),
		dialErrs: m.dialErrors.WithLabelValues(name),
	}
}
