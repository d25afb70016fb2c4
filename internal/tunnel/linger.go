package tunnel

import (
	"io"
	"net"
	"sync"
	"time"
)

// closeLinger bounds how long closing a session's connection waits for the
// peer to close its side.
const closeLinger = 5 * time.Second

// lingers closes the TCP connections under sessions gracefully. A plain
// close(2) of a socket with unread received data (the peer's window updates
// and keepalives keep arriving) sends an RST, and an RST throws away what
// is still in the socket's send buffer: the last bytes and FINs of the
// streams that had just finished. So the connection is half-closed (FIN
// after everything sent), the peer's remaining bytes are read and dropped
// until it closes too, and only then is it closed, at most closeLinger
// later. A process waits for its lingering closes before it exits.
type lingers struct{ wg sync.WaitGroup }

// close starts the graceful close of c.
func (l *lingers) close(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		_ = c.Close()
		return
	}
	l.wg.Go(func() {
		_ = c.SetReadDeadline(time.Now().Add(closeLinger))
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
	})
}

// wait blocks until every close started so far is done.
func (l *lingers) wait() { l.wg.Wait() }

// lingerConn is a session's connection whose Close is graceful.
type lingerConn struct {
	net.Conn
	l    *lingers
	once sync.Once
}

func (c *lingerConn) Close() error {
	c.once.Do(func() { c.l.close(c.Conn) })
	return nil
}
