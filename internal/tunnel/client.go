package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

// Client is the home side: it dials the server, keeps one session up
// (reconnecting forever with capped, jittered exponential backoff) and
// forwards each stream to the upstream configured for its listener name.
type Client struct {
	cfg       ClientConfig
	log       *slog.Logger
	m         *metrics
	pool      *bufPool
	id        string
	upstreams map[string]Endpoint
	lms       map[string]*listenerMetrics

	adm      *admin
	ready    atomic.Bool
	draining atomic.Bool

	mu   sync.Mutex
	sess *smux.Session

	conns connSet
	// ending tracks sessions whose relays are still delivering what they
	// received before the session ended (connSet.endSession).
	ending sync.WaitGroup
	// lingers are the graceful closes of session connections.
	lingers lingers
}

// NewClient checks cfg and prepares a client.
func NewClient(cfg ClientConfig, log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	c := &Client{
		cfg:       cfg,
		log:       log,
		pool:      newBufPool(cfg.CopyBufferSize),
		id:        hex.EncodeToString(idb[:]),
		upstreams: map[string]Endpoint{},
		lms:       map[string]*listenerMetrics{},
	}
	names := make([]string, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		names = append(names, u.Name)
		c.upstreams[u.Name] = u
	}
	c.m = newMetrics("client", names)
	for _, n := range names {
		c.lms[n] = c.m.listener(n)
	}
	return c, nil
}

// Ready is true while a session is up and the client is not draining.
func (c *Client) Ready() bool { return c.ready.Load() && !c.draining.Load() }

// AdminAddr is the bound admin address ("" when disabled or not started).
func (c *Client) AdminAddr() string { return c.adm.addr() }

func (c *Client) setReady(v bool) {
	c.ready.Store(v)
	if c.Ready() {
		c.m.ready.Set(1)
	} else {
		c.m.ready.Set(0)
	}
}

// Run binds the admin endpoint and keeps a session up until ctx is done,
// then drains for DrainGrace. It returns an error only if it cannot start.
func (c *Client) Run(ctx context.Context) error {
	var err error
	if c.adm, err = startAdmin(c.cfg.AdminAddr, c.m, c.Ready, c.log); err != nil {
		return fmt.Errorf("listen --admin-addr %s: %w", c.cfg.AdminAddr, err)
	}
	defer c.adm.close()
	c.log.Info("tunnel client started", "server", c.cfg.ServerURL, "client_id", c.id, "admin", c.adm.addr())
	c.loop(ctx)
	c.drain(c.cfg.DrainGrace)
	return nil
}

// loop connects, serves the session until it dies, backs off, repeats.
func (c *Client) loop(ctx context.Context) {
	attempt := 0
	established := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := c.session(ctx, established > 0 || attempt > 0)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errSessionEnded) {
			established++
			// A session that lived a while resets the backoff.
			if time.Since(start) > 2*c.cfg.BackoffMax || time.Since(start) > time.Minute {
				attempt = 0
			}
		}
		d := backoff(c.cfg.BackoffMin, c.cfg.BackoffMax, attempt)
		attempt++
		c.log.Info("reconnecting", "in", d.Round(time.Millisecond).String(), "attempt", attempt)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff is min*2^attempt capped at max, with "equal jitter": a uniform
// value in [d/2, d], so many clients restarted together spread out.
func backoff(minD, maxD time.Duration, attempt int) time.Duration {
	d := minD
	for i := 0; i < attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	half := d / 2
	return half + time.Duration(mrand.Int64N(int64(half)+1))
}

var errSessionEnded = errors.New("session ended")

// session runs one connection attempt and, if it succeeds, the session
// until it ends. It logs its own failures.
func (c *Client) session(ctx context.Context, reconnect bool) error {
	token, err := c.cfg.clientToken()
	if err != nil {
		c.m.connectErrors.WithLabelValues("token").Inc()
		c.log.Error("no token; will retry", "err", err)
		return err
	}
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: c.cfg.HandshakeTimeout,
		ReadBufferSize:   c.cfg.Session.ReadBufferSize,
		WriteBufferSize:  c.cfg.Session.WriteBufferSize,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &lingerConn{Conn: fastConn(conn), l: &c.lingers}, nil
		},
	}
	tc, err := clientTLSConfig(c.cfg.CAFile)
	if err != nil {
		c.m.connectErrors.WithLabelValues("tls_config").Inc()
		c.log.Error("cannot load CA file; will retry", "err", err)
		return err
	}
	d.TLSClientConfig = tc
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	h.Set(ClientIDHeader, c.id)
	h.Set(smux.FeaturesHeader, smux.Features())
	dctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	ws, resp, err := d.DialContext(dctx, c.cfg.ServerURL, h)
	cancel()
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			c.m.authFailures.Inc()
			c.m.connectErrors.WithLabelValues("unauthorized").Inc()
			c.log.Error("server rejected the token (HTTP 401); check --token-file/TUNNEL_TOKEN; will keep retrying", "server", c.cfg.ServerURL)
			return ErrUnauthorized
		}
		reason := "dial"
		if resp != nil {
			reason = "handshake"
			err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		c.m.connectErrors.WithLabelValues(reason).Inc()
		c.log.Warn("connect to server failed; will retry", "server", c.cfg.ServerURL, "err", err)
		return err
	}
	scfg := c.cfg.Session.WithFeatures(resp.Header.Get(smux.FeaturesHeader))
	sess, err := smux.Client(smux.NewConn(ws, scfg.KeepAliveTimeout), scfg)
	if err != nil {
		_ = ws.Close()
		return err
	}
	c.mu.Lock()
	c.sess = sess
	c.mu.Unlock()
	c.m.sessions.Set(1)
	c.m.sessionsTotal.Inc()
	if reconnect {
		c.m.reconnects.Inc()
	}
	c.setReady(true)
	go watchStreamCap(sess, scfg.MaxStreams, c.m, c.log, "server", c.cfg.ServerURL)
	c.log.Info("session up", "server", c.cfg.ServerURL, "remote", ws.RemoteAddr().String())
	pipes := &connSet{}
	acceptDone := make(chan error, 1)
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				acceptDone <- err
				return
			}
			go c.handleStream(st, pipes)
		}
	}()
	select {
	case reason := <-acceptDone:
		c.setReady(false)
		c.m.sessions.Set(0)
		c.log.Warn("session down", "reason", reason.Error(), "open_streams", pipes.count())
		// Relays on the session deliver what they received, then end;
		// the next session does not wait for them.
		c.ending.Go(func() { pipes.endSession(sess, c.cfg.Session.KeepAliveTimeout) })
	case <-ctx.Done():
		// Shutting down: keep the session for drain, which closes it.
	}
	return errSessionEnded
}

func (c *Client) refuse(st *smux.Stream, r smux.Reply) {
	c.m.refused.WithLabelValues(r.String()).Inc()
	_ = st.SetWriteDeadline(time.Now().Add(c.cfg.HeaderTimeout))
	_ = smux.WriteReply(st, r)
	_ = st.Close()
}

func (c *Client) handleStream(st *smux.Stream, pipes *connSet) {
	if c.draining.Load() {
		c.refuse(st, smux.ReplyDraining)
		return
	}
	_ = st.SetReadDeadline(time.Now().Add(c.cfg.HeaderTimeout))
	h, err := smux.ReadHeader(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil {
		c.log.Warn("bad stream header; stream refused", "err", err)
		c.refuse(st, smux.ReplyBadHeader)
		return
	}
	up, ok := c.upstreams[h.Listener]
	if !ok {
		// The name is charset-checked by ReadHeader, safe to log.
		c.log.Warn("stream for unknown listener refused", "listener", h.Listener)
		c.refuse(st, smux.ReplyUnknownListener)
		return
	}
	lm := c.lms[h.Listener]
	conn, err := net.DialTimeout("tcp", up.Addr, c.cfg.DialTimeout)
	conn = fastConn(conn)
	if err != nil {
		lm.dialErrs.Inc()
		c.log.Warn("stream refused", "err", fmt.Errorf("dial upstream %q (%s): %w", up.Name, up.Addr, err))
		c.refuse(st, smux.ReplyDialFailed)
		return
	}
	p := &pipe{local: conn, st: st, lm: lm, pool: c.pool}
	if !pipes.add(p) {
		resetConn(conn)
		_ = st.Close()
		return
	}
	defer pipes.remove(p)
	if err := smux.WriteReply(st, smux.ReplyOK); err != nil {
		resetConn(conn)
		_ = st.Close()
		return
	}
	c.conns.add(p)
	defer c.conns.remove(p)
	p.run()
}

// drain refuses new streams, lets open ones finish for up to grace, closes
// the rest, and only then closes the session.
func (c *Client) drain(grace time.Duration) {
	c.draining.Store(true)
	c.setReady(false)
	c.log.Info("draining", "open_streams", c.conns.count(), "grace", grace.String())
	if !c.conns.wait(grace) {
		c.log.Warn("drain grace expired; closing remaining streams", "open_streams", c.conns.count())
		c.conns.closeAll()
		c.conns.wait(5 * time.Second)
	}
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
	c.ending.Wait()
	c.lingers.wait()
	c.log.Info("tunnel client stopped")
}
