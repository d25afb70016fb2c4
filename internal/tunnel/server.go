package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

// ClientIDHeader carries a random per-process client identity, so the server
// can retire a client's older sessions the moment that client reconnects.
const ClientIDHeader = "X-L5d-Tunnel-Client"

// Server is the cloud side: it owns the named listeners and accepts client
// sessions on the websocket endpoint.
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	m    *metrics
	pool *bufPool

	started  atomic.Bool
	draining atomic.Bool

	tunnelLn  net.Listener
	httpSrv   *http.Server
	listeners map[string]net.Listener
	adm       *admin

	mu       sync.Mutex
	sessions []*serverSession // oldest first; new streams use the newest
	nextID   uint64

	conns   connSet
	bg      sync.WaitGroup
	stopped chan struct{}

	pending    *pendingListener
	lingers    lingers    // graceful closes of session connections
	pendingLog logLimiter // "too many unauthenticated connections"
	authLog    logLimiter // "client rejected" (failed authentication)
}

type serverSession struct {
	id       uint64
	clientID string
	remote   string
	sess     *smux.Session
	// draining is set when the client answered a stream with "draining"
	// (it got SIGTERM): new connections then go to other sessions.
	draining atomic.Bool
	// pipes are the relays on this session; they end with it.
	pipes connSet
	// ws is the session's websocket (for pings); pongs counts its pongs.
	ws    *websocket.Conn
	pongs atomic.Uint64
	// suspect is set while the client leaves a new stream unanswered past
	// ReplyTimeout and has not answered a ping yet; dropped once the
	// session was dropped for it. checking is the running check (check).
	suspect, dropped atomic.Bool
	checkMu          sync.Mutex
	checking         chan struct{}
}

// NewServer checks cfg and prepares a server; Start binds it.
func NewServer(cfg ServerConfig, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(cfg.Ports))
	for _, p := range cfg.Ports {
		names = append(names, p.Name)
	}
	return &Server{
		cfg:        cfg,
		log:        log,
		m:          newMetrics("server", names),
		pool:       newBufPool(cfg.CopyBufferSize),
		listeners:  map[string]net.Listener{},
		stopped:    make(chan struct{}),
		pendingLog: logLimiter{every: logEvery},
		authLog:    logLimiter{every: logEvery},
	}, nil
}

// Start binds the websocket endpoint, every --port listener and the admin
// endpoint, and starts serving. Nothing is served if any bind fails.
func (s *Server) Start() (err error) {
	if s.started.Swap(true) {
		return ErrAlreadyStarted
	}
	defer func() {
		if err != nil {
			s.closeListeners()
		}
	}()
	var tlsCfg *tls.Config
	if s.cfg.TLSCert != "" {
		r, err := newCertReloader(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return err
		}
		tlsCfg = r.tlsConfig()
	}
	if s.tunnelLn, err = net.Listen("tcp", s.cfg.Listen); err != nil {
		return fmt.Errorf("listen --listen %s: %w", s.cfg.Listen, err)
	}
	for _, p := range s.cfg.Ports {
		ln, err := net.Listen("tcp", p.Addr)
		if err != nil {
			return fmt.Errorf("listen --port %s=%s: %w", p.Name, p.Addr, err)
		}
		s.listeners[p.Name] = ln
	}
	if s.adm, err = startAdmin(s.cfg.AdminAddr, s.m, s.Ready, s.log); err != nil {
		return fmt.Errorf("listen --admin-addr %s: %w", s.cfg.AdminAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(TunnelPath, s.handleTunnel)
	// Until it authenticates, a connection may take HandshakeTimeout for
	// its TLS handshake and request headers and may idle that long between
	// requests; a failed authentication closes it (handleTunnel).
	s.httpSrv = &http.Server{Handler: mux, TLSConfig: tlsCfg,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout, IdleTimeout: s.cfg.HandshakeTimeout,
		ConnContext: withPendingConn,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.pending = &pendingListener{Listener: rawListener{s.tunnelLn}, max: int64(s.cfg.MaxPendingConns), lingers: &s.lingers,
		rejected: func() {
			s.m.pendingRejected.Inc()
			s.pendingLog.log(s.log, slog.LevelWarn, "too many unauthenticated connections; new ones are closed",
				"max_pending_conns", s.cfg.MaxPendingConns)
		}}
	s.m.pendingFunc(func() float64 { return float64(s.pending.pending.Load()) })
	var ln net.Listener = s.pending
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	s.bg.Go(func() {
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("tunnel endpoint stopped", "err", err)
		}
	})
	for _, p := range s.cfg.Ports {
		ln := s.listeners[p.Name]
		lm := s.m.listener(p.Name)
		s.bg.Go(func() { s.acceptLoop(p.Name, ln, lm) })
		s.log.Info("listening", "listener", p.Name, "addr", ln.Addr().String())
	}
	s.log.Info("tunnel server started", "listen", s.tunnelLn.Addr().String(), "path", TunnelPath,
		"tls", tlsCfg != nil, "admin", s.adm.addr())
	return nil
}

// Run starts the server, serves until ctx is done, then drains for
// DrainGrace and stops.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	s.Shutdown(s.cfg.DrainGrace)
	return nil
}

// Addr is the bound websocket endpoint address.
func (s *Server) Addr() string { return s.tunnelLn.Addr().String() }

// ListenerAddr is the bound address of the named listener.
func (s *Server) ListenerAddr(name string) string {
	if ln := s.listeners[name]; ln != nil {
		return ln.Addr().String()
	}
	return ""
}

// AdminAddr is the bound admin address ("" when disabled).
func (s *Server) AdminAddr() string { return s.adm.addr() }

// Ready is true while at least one client session is up and the server is
// not draining.
func (s *Server) Ready() bool {
	if s.draining.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		if !ss.draining.Load() {
			return true
		}
	}
	return false
}

func (s *Server) updateReady() {
	if s.Ready() {
		s.m.ready.Set(1)
	} else {
		s.m.ready.Set(0)
	}
}

// Shutdown drains: stop accepting connections and sessions, report not
// ready, give open streams up to grace to finish, then close what is left
// (streams before sessions).
func (s *Server) Shutdown(grace time.Duration) {
	if s.draining.Swap(true) {
		<-s.stopped
		return
	}
	defer close(s.stopped)
	s.updateReady()
	open := s.conns.count()
	s.log.Info("draining", "open_streams", open, "grace", grace.String())
	s.closeListeners()
	if s.httpSrv != nil {
		_ = s.httpSrv.Close() // hijacked websocket connections are not affected
	}
	if !s.conns.wait(grace) {
		s.log.Warn("drain grace expired; closing remaining streams", "open_streams", s.conns.count())
		s.conns.closeAll()
		s.conns.wait(5 * time.Second)
	}
	s.mu.Lock()
	sessions := append([]*serverSession(nil), s.sessions...)
	s.mu.Unlock()
	for _, ss := range sessions {
		_ = ss.sess.Close()
	}
	s.bg.Wait()
	s.lingers.wait()
	s.adm.close()
	s.log.Info("tunnel server stopped")
}

func (s *Server) closeListeners() {
	if s.tunnelLn != nil && s.httpSrv == nil {
		_ = s.tunnelLn.Close()
	}
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
}

func (s *Server) handleTunnel(w http.ResponseWriter, r *http.Request) {
	remote := r.RemoteAddr
	if s.draining.Load() {
		w.Header().Set("Connection", "close")
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	accepted, err := s.cfg.tokens()
	if err != nil {
		s.log.Error("cannot read token; rejecting client", "remote", remote, "err", err)
	}
	if res := checkAuth(r, accepted); res != authOK {
		// Counted every time, logged at most once per logEvery.
		s.m.authFailures.Inc()
		s.authLog.log(s.log, slog.LevelWarn, "client rejected", "remote", remote, "reason", res.String())
		w.Header().Set("WWW-Authenticate", `Bearer realm="l5d-tunnel"`)
		w.Header().Set("Connection", "close") // no keep-alive for an unauthenticated peer
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	up := websocket.Upgrader{
		ReadBufferSize:  s.cfg.Session.ReadBufferSize,
		WriteBufferSize: s.cfg.Session.WriteBufferSize,
		// The bearer token, not the Origin, authenticates; browsers cannot
		// set it on a cross-site websocket.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	agreed := smux.AcceptFeatures(r.Header.Get(smux.FeaturesHeader))
	scfg := s.cfg.Session.WithFeatures(agreed)
	var respHeader http.Header
	if agreed != "" {
		respHeader = http.Header{smux.FeaturesHeader: {agreed}}
	}
	ws, err := up.Upgrade(w, r, respHeader)
	if err != nil {
		s.log.Warn("websocket upgrade failed", "remote", remote, "err", err)
		return
	}
	authenticated(r.Context())
	ss := &serverSession{clientID: r.Header.Get(ClientIDHeader), remote: remote, ws: ws}
	conn := smux.NewConn(ws, scfg.KeepAliveTimeout)
	pong := ws.PongHandler()
	ws.SetPongHandler(func(data string) error { ss.pongs.Add(1); return pong(data) })
	sess, err := smux.Server(conn, scfg)
	if err != nil {
		_ = ws.Close()
		s.log.Error("start session", "remote", remote, "err", err)
		return
	}
	ss.sess = sess
	go watchStreamCap(sess, scfg.MaxStreams, s.m, s.log, "remote", remote)
	replaced := s.addSession(ss)
	s.log.Info("client session up", "session", ss.id, "remote", remote, "client_id", ss.clientID, "replaced", replaced)
	// Clients never open streams; accepting here is how a dead session is
	// noticed (keepalive timeout, read error, protocol error).
	var reason error
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			reason = err
			break
		}
		s.m.refused.WithLabelValues(reasonUnexpectedStream).Inc()
		_ = st.Close()
	}
	s.removeSession(ss)
	s.log.Info("client session down", "session", ss.id, "remote", remote, "reason", reason.Error(),
		"open_streams", ss.pipes.count())
	ss.pipes.endSession(sess, s.cfg.Session.KeepAliveTimeout)
}

// addSession makes ss the preferred session for new streams and retires
// older sessions of the same client, which that client has given up on.
func (s *Server) addSession(ss *serverSession) (replaced int) {
	s.mu.Lock()
	s.nextID++
	ss.id = s.nextID
	var old []*serverSession
	if ss.clientID != "" {
		for _, o := range s.sessions {
			if o.clientID == ss.clientID {
				old = append(old, o)
			}
		}
	}
	s.sessions = append(s.sessions, ss)
	s.mu.Unlock()
	s.m.sessions.Inc()
	s.m.sessionsTotal.Inc()
	if len(old) > 0 {
		s.m.reconnects.Inc()
	}
	s.updateReady()
	for _, o := range old {
		_ = o.sess.Close()
	}
	return len(old)
}

func (s *Server) removeSession(ss *serverSession) {
	s.mu.Lock()
	found := false
	for i, o := range s.sessions {
		if o == ss {
			s.sessions = append(s.sessions[:i], s.sessions[i+1:]...)
			found = true
			break
		}
	}
	s.mu.Unlock()
	if found {
		s.m.sessions.Dec()
	}
	s.updateReady()
}

// pick returns the newest live session whose client is neither draining
// nor suspect, or, failing that, the newest live session, leaving out
// exclude.
func (s *Server) pick(exclude ...*serverSession) *serverSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fallback *serverSession
next:
	for i := len(s.sessions) - 1; i >= 0; i-- {
		ss := s.sessions[i]
		if ss.sess.IsClosed() {
			continue
		}
		for _, e := range exclude {
			if e == ss {
				continue next
			}
		}
		if !ss.draining.Load() && !ss.suspect.Load() {
			return ss
		}
		if fallback == nil {
			fallback = ss
		}
	}
	return fallback
}

func (s *Server) acceptLoop(name string, ln net.Listener, lm *listenerMetrics) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// e.g. EMFILE: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "listener", name, "err", err, "retry_in", delay.String())
			time.Sleep(delay)
			continue
		}
		delay = 0
		go s.handleConn(name, fastConn(c), lm)
	}
}

func (s *Server) handleConn(name string, c net.Conn, lm *listenerMetrics) {
	if s.draining.Load() {
		s.m.refused.WithLabelValues(smux.ReplyDraining.String()).Inc()
		resetConn(c)
		return
	}
	ss := s.pick()
	if ss == nil {
		// Closed at once, not black-holed: the caller sees the failure now.
		s.m.refused.WithLabelValues(reasonNoSession).Inc()
		s.log.Debug("no client session; connection reset", "listener", name, "remote", c.RemoteAddr().String())
		resetConn(c)
		return
	}
	st, err := openStream(ss, name)
	if errors.Is(err, smux.ErrStreamLimit) {
		// Counted and logged once per interval by watchStreamCap.
		resetConn(c)
		return
	}
	if err != nil {
		s.m.refused.WithLabelValues(reasonOpenFailed).Inc()
		s.log.Warn("open stream failed; connection reset", "listener", name, "session", ss.id, "err", err)
		resetConn(c)
		return
	}
	p := &pipe{local: c, st: st, lm: lm, pool: s.pool, replay: newReplay()}
	if !ss.pipes.add(p) {
		s.m.refused.WithLabelValues(reasonOpenFailed).Inc()
		_ = st.Close()
		resetConn(c)
		return
	}
	cur := ss // the session the pipe is on; the reply wait may move it
	defer func() { cur.pipes.remove(p) }()
	s.conns.add(p)
	defer s.conns.remove(p)
	p.awaitReply = func() error {
		tried := []*serverSession{ss}
		patient := false
		for {
			rep, err := s.awaitReply(cur, p.stream(), patient)
			if err != nil {
				// The session did not answer in time, or died before it
				// answered: the connection moves to the next live
				// session, with what the caller sent so far.
				next := s.pick(tried...)
				if next == nil {
					if errors.Is(err, errSilent) {
						// Nowhere else to go: wait for the ping.
						<-s.check(cur)
						if !cur.dropped.Load() {
							patient = true
							continue
						}
					}
					return err
				}
				tried = append(tried, next)
				if err := s.move(p, cur, next, name); err != nil {
					return err
				}
				s.log.Info("stream moved to another session", "listener", name, "from", cur.id, "to", next.id, "reason", err.Error())
				cur, patient = next, false
				continue
			}
			p.replay.finish()
			if rep != smux.ReplyOK {
				s.m.refused.WithLabelValues(rep.String()).Inc()
				if rep == smux.ReplyDialFailed {
					lm.dialErrs.Inc()
				}
				if rep == smux.ReplyDraining && !cur.draining.Swap(true) {
					s.log.Info("client is draining; new connections go to other sessions", "session", cur.id)
					s.updateReady()
				}
				s.log.Warn("client refused stream", "listener", name, "session", cur.id, "reason", rep.String())
				return errRefused
			}
			return nil
		}
	}
	p.run()
}

// openStream opens a stream on ss and sends its header.
func openStream(ss *serverSession, name string) (*smux.Stream, error) {
	st, err := ss.sess.OpenStream()
	if err != nil {
		return nil, err
	}
	if err := smux.WriteHeader(st, smux.Header{Listener: name}); err != nil {
		_ = st.Close()
		return nil, err
	}
	return st, nil
}

// move puts p on a new stream on next, leaving from.
func (s *Server) move(p *pipe, from, next *serverSession, name string) error {
	st, err := openStream(next, name)
	if err != nil {
		return err
	}
	if !next.pipes.add(p) {
		_ = st.Close()
		return io.ErrClosedPipe
	}
	from.pipes.remove(p)
	if err := p.moveTo(st); err != nil {
		next.pipes.remove(p)
		from.pipes.add(p) // the deferred remove finds it there
		return err
	}
	return nil
}

// awaitReply reads the client's status byte for st. Unless patient, a
// client that has not answered within ReplyTimeout is suspect: new
// connections avoid its session, a ping checks it (s.check), and errSilent
// is returned so the connection can move to another session.
func (s *Server) awaitReply(ss *serverSession, st *smux.Stream, patient bool) (smux.Reply, error) {
	if !patient {
		_ = st.SetReadDeadline(time.Now().Add(s.cfg.ReplyTimeout))
	}
	rep, err := smux.ReadReply(st)
	_ = st.SetReadDeadline(time.Time{})
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		s.check(ss)
		return 0, errSilent
	}
	return rep, err
}

var errSilent = errors.New("client did not answer the stream in time")

// check marks ss suspect and pings it, once at a time; the returned channel
// is closed when the check is over. A session that does not answer the ping
// within 2 x ReplyTimeout is dropped (ss.dropped): its streams are reset and
// its client reconnects if it is still there. One that answers is only slow
// (a slow upstream dial) and is no longer suspect.
func (s *Server) check(ss *serverSession) <-chan struct{} {
	ss.checkMu.Lock()
	defer ss.checkMu.Unlock()
	if ss.checking != nil {
		return ss.checking
	}
	done := make(chan struct{})
	ss.checking = done
	ss.suspect.Store(true)
	wait := 2 * s.cfg.ReplyTimeout
	s.log.Warn("client did not answer a new stream in time; session is suspect, pinging it",
		"session", ss.id, "reply_timeout", s.cfg.ReplyTimeout.String())
	go func() {
		defer func() {
			ss.checkMu.Lock()
			ss.checking = nil
			ss.checkMu.Unlock()
			close(done)
		}()
		seen := ss.pongs.Load()
		deadline := time.Now().Add(wait)
		_ = ss.ws.WriteControl(websocket.PingMessage, nil, deadline)
		for time.Now().Before(deadline) && !ss.sess.IsClosed() {
			if ss.pongs.Load() != seen {
				ss.suspect.Store(false)
				s.log.Info("suspect session answered a ping; it is only slow", "session", ss.id)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		ss.dropped.Store(true)
		s.log.Warn("suspect session did not answer a ping; dropping it and resetting its streams",
			"session", ss.id, "wait", wait.String())
		s.removeSession(ss)
		_ = ss.sess.Close()
	}()
	return done
}

var errRefused = errors.New("stream refused by client")

// logEvery is the interval of rate-limited log lines (failed
// authentications, refusals a peer can cause at will).
const logEvery = 10 * time.Second

// connSet tracks forwarding pipes: every pipe of a process (for the drain)
// and every pipe of one session (so they end with it).
type connSet struct {
	mu    sync.Mutex
	m     map[*pipe]struct{}
	zero  chan struct{} // closed when m becomes empty after closeAll/wait starts
	ended bool          // the session is gone: add refuses new pipes
}

// add registers p; it reports false when the set was ended (the session is
// gone), and then p must not run.
func (cs *connSet) add(p *pipe) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.ended {
		return false
	}
	if cs.m == nil {
		cs.m = map[*pipe]struct{}{}
	}
	cs.m[p] = struct{}{}
	return true
}

func (cs *connSet) remove(p *pipe) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.m, p)
	if len(cs.m) == 0 && cs.zero != nil {
		close(cs.zero)
		cs.zero = nil
	}
}

func (cs *connSet) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}

// wait blocks until no pipe is left or d has passed; it reports whether
// the set emptied.
func (cs *connSet) wait(d time.Duration) bool {
	cs.mu.Lock()
	if len(cs.m) == 0 {
		cs.mu.Unlock()
		return true
	}
	if cs.zero == nil {
		cs.zero = make(chan struct{})
	}
	z := cs.zero
	cs.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-z:
		return true
	case <-t.C:
		return false
	}
}

func (cs *connSet) snapshot() []*pipe {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	ps := make([]*pipe, 0, len(cs.m))
	for p := range cs.m {
		ps = append(ps, p)
	}
	return ps
}

func (cs *connSet) closeAll() {
	for _, p := range cs.snapshot() {
		p.abort()
	}
}

// endSession runs when the transport of a session is gone (the peer closed
// it, died, or went silent past the keepalive timeout). No new pipe joins
// the set. Each pipe still delivers what its stream had already received,
// for at most linger, and breaks (resetting its local socket) unless the
// peer's FIN came in both directions. Only then is the session closed,
// which discards what is left in its buffers.
func (cs *connSet) endSession(sess *smux.Session, linger time.Duration) {
	cs.mu.Lock()
	cs.ended = true
	cs.mu.Unlock()
	for _, p := range cs.snapshot() {
		p.endSession()
	}
	if !cs.wait(linger) {
		cs.closeAll()
		cs.wait(5 * time.Second)
	}
	_ = sess.Close()
}
