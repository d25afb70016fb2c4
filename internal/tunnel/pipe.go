package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

// bufPool hands out copy buffers of one size. A buffer is held only while
// bytes are in hand, never while waiting for an idle socket (see
// localToStream), so a thousand idle connections cost no copy buffers.
type bufPool struct {
	size int
	p    sync.Pool
}

func newBufPool(size int) *bufPool {
	bp := &bufPool{size: size}
	bp.p.New = func() any { b := make([]byte, size); return &b }
	return bp
}

func (bp *bufPool) get() *[]byte  { return bp.p.Get().(*[]byte) }
func (bp *bufPool) put(b *[]byte) { bp.p.Put(b) }

// pipe forwards between a local TCP connection and a stream, both ways,
// preserving half-close: EOF from the local socket becomes the stream's
// CloseWrite (FIN) and the stream's EOF becomes the socket's CloseWrite. An
// error in either direction closes both ends, and only them.
type pipe struct {
	local     net.Conn
	st        *smux.Stream
	lm        *listenerMetrics
	pool      *bufPool
	abortOnce sync.Once
	// awaitReply, when set, runs before the stream-to-socket direction
	// (the server waits for the client's status byte there; the other
	// direction already flows).
	awaitReply func() error
}

// run blocks until both directions are done, then closes both ends. The
// stream is closed (its FIN queued behind its data) before anything closes
// the session, so no buffered byte is dropped.
func (p *pipe) run() {
	p.lm.open.Inc()
	p.lm.total.Inc()
	defer p.lm.open.Dec()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.localToStream(); err != nil {
			p.abort()
		}
	}()
	if err := p.streamToLocal(); err != nil {
		p.abort()
	}
	<-done
	_ = p.st.Close()
	_ = p.local.Close()
}

// abort closes both ends at once, unblocking the other direction.
func (p *pipe) abort() {
	p.abortOnce.Do(func() {
		_ = p.local.Close()
		_ = p.st.Close()
	})
}

func (p *pipe) localToStream() error {
	rc := rawConn(p.local)
	for {
		// Wait for the peer's window and read no more than it takes, so a
		// relay whose far end does not read holds no copy buffer.
		room, err := p.st.WaitWritable()
		if err != nil {
			return err
		}
		var bp *[]byte
		var n int
		if haveReadPooled && rc != nil {
			bp, n, err = readPooled(rc, p.pool, room)
		} else {
			bp = p.pool.get()
			n, err = p.local.Read((*bp)[:min(room, len(*bp))])
		}
		if n > 0 {
			p.lm.in.Add(float64(n))
			_, werr := p.st.Write((*bp)[:n])
			p.pool.put(bp)
			if werr != nil {
				return werr
			}
		} else if bp != nil {
			p.pool.put(bp)
		}
		if errors.Is(err, io.EOF) {
			return p.st.CloseWrite()
		}
		if err != nil {
			return err
		}
	}
}

func (p *pipe) streamToLocal() error {
	if p.awaitReply != nil {
		if err := p.awaitReply(); err != nil {
			return err
		}
	}
	// Stream.WriteTo hands received frames straight to the socket: no copy
	// buffer at all.
	if _, err := p.st.WriteTo(countingWriter{p.local, p.lm}); err != nil {
		return err
	}
	if cw, ok := p.local.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type countingWriter struct {
	w  io.Writer
	lm *listenerMetrics
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.lm.out.Add(float64(n))
	return n, err
}

func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
