package tunnel

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// pendingListener bounds how many connections to the websocket endpoint may
// be held before they authenticate: accepted, in the TLS handshake, sending
// their request, or idle in HTTP keep-alive. A connection leaves the count
// when it becomes a session (handleTunnel calls authenticated) or closes.
// Past the cap a new connection is closed at once: the peers holding the
// slots are unauthenticated, and a real client retries with backoff.
type pendingListener struct {
	net.Listener
	max      int64
	pending  atomic.Int64
	rejected func() // counts a connection closed for the cap
	lingers  *lingers
}

func (l *pendingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.pending.Add(1) > l.max {
			l.pending.Add(-1)
			l.rejected()
			resetConn(c)
			continue
		}
		return &pendingConn{Conn: c, l: l}, nil
	}
}

// pendingConn holds one slot of its listener until it is authenticated or
// closed.
type pendingConn struct {
	net.Conn
	l    *pendingListener
	once sync.Once
	// session is set once the connection carries a session: its close is
	// then graceful (lingers).
	session   atomic.Bool
	closeOnce sync.Once
}

func (c *pendingConn) release() { c.once.Do(func() { c.l.pending.Add(-1) }) }

func (c *pendingConn) Close() error {
	c.release()
	if c.session.Load() {
		c.closeOnce.Do(func() { c.l.lingers.close(c.Conn) })
		return nil
	}
	return c.Conn.Close()
}

// SetLinger keeps resetConn working through the wrapper.
func (c *pendingConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

type pendingConnKey struct{}

// withPendingConn is the http.Server ConnContext: it lets the handler find
// the pendingConn under a request.
func withPendingConn(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if pc, ok := c.(*pendingConn); ok {
		return context.WithValue(ctx, pendingConnKey{}, pc)
	}
	return ctx
}

// authenticated releases the pending slot of the request's connection.
func authenticated(ctx context.Context) {
	if pc, ok := ctx.Value(pendingConnKey{}).(*pendingConn); ok {
		pc.release()
		pc.session.Store(true)
	}
}

// logLimiter lets one line through per interval and tells how many were
// suppressed in between; counters are kept by the caller, not here.
type logLimiter struct {
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether to log now and how many lines were suppressed
// since the last one that was logged.
func (l *logLimiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}

// log writes msg at level if the limiter allows, with a "suppressed" count.
func (l *logLimiter) log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	if ok, n := l.allow(); ok {
		log.Log(context.Background(), level, msg, append(args, "suppressed", n)...)
	}
}
