package tunnel

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawTCPConn is a *net.TCPConn whose Read and Write issue the read(2) and
// write(2) on the non-blocking socket as raw system calls: the goroutine
// keeps its P for the few microseconds the call takes instead of telling
// the scheduler it entered a possibly blocking system call. That matters
// with --max-procs 1: a loopback write that runs longer than one sysmon
// tick (20 µs) otherwise has its P handed to another thread (two futex
// wake-ups and context switches), and every such hand-off keeps sysmon
// polling every 20 µs. Waiting for readiness still goes through the
// runtime poller, so deadlines and Close work as usual. Everything else
// (CloseWrite, deadlines, addresses) is the embedded *net.TCPConn.
type rawTCPConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

// fastConn wraps c when it is a TCP connection; anything else is returned
// unchanged.
func fastConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &rawTCPConn{TCPConn: tc, rc: rc}
}

func (c *rawTCPConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func (c *rawTCPConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, errno := 0, syscall.Errno(0)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = rawRead(fd, b)
			switch errno {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, unwrapRaw(c, "read", err)
	case errno != 0:
		return 0, c.opErr("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawTCPConn) Write(b []byte) (int, error) {
	n, errno := 0, syscall.Errno(0)
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n))
			switch e {
			case 0:
				n += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return n, unwrapRaw(c, "write", err)
	case errno != 0:
		return n, c.opErr("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// unwrapRaw turns the "raw-read"/"raw-write" error of a RawConn into the
// error net.TCPConn.Read/Write would have returned (timeout, closed).
func unwrapRaw(c *rawTCPConn, op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return c.opErr(op, err)
}

// rawListener hands out rawTCPConns.
type rawListener struct{ net.Listener }

func (l rawListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return fastConn(c), nil
}

// readPooled reads from a socket into a pooled buffer that is taken only
// when data is there: the read syscall runs inside RawConn.Read, and on
// EAGAIN the buffer goes back to the pool before the goroutine parks on the
// poller. The syscall count is the same as net.Conn.Read (read, EAGAIN,
// wait, read), but a thousand idle connections hold no copy buffers.
// It reads at most limit bytes and returns bp == nil with io.EOF at end of
// stream.
func readPooled(rc syscall.RawConn, pool *bufPool, limit int) (bp *[]byte, n int, err error) {
	var errno syscall.Errno
	err = rc.Read(func(fd uintptr) bool {
		for {
			bp = pool.get()
			n, errno = rawRead(fd, (*bp)[:min(limit, len(*bp))])
			switch errno {
			case syscall.EINTR:
				pool.put(bp)
				continue
			case syscall.EAGAIN:
				pool.put(bp)
				bp = nil
				return false // park until readable
			}
			return true
		}
	})
	if err != nil { // closed or deadline while parked
		return nil, 0, err
	}
	if errno != 0 {
		pool.put(bp)
		return nil, 0, &net.OpError{Op: "read", Net: "tcp", Err: errno}
	}
	if n == 0 {
		pool.put(bp)
		return nil, 0, io.EOF
	}
	return bp, n, nil
}

const haveReadPooled = true

// rawRead is read(2) as a raw system call (see rawTCPConn): the socket is
// non-blocking, so it never blocks. It returns the errno itself, as
// rawTCPConn.Write does, so callers compare it with syscall.EINTR and
// EAGAIN as a number: no error interface on the hot path.
func rawRead(fd uintptr, b []byte) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// waitReset parks on the poller until the peer of rc, which already sent
// its FIN, resets the connection. Nothing is read or written, so nothing
// else would notice. It returns the reset (ECONNRESET or EPIPE) or the
// error that ended the wait (a deadline, the socket closed).
func waitReset(rc syscall.RawConn) error {
	var reset error
	err := rc.Read(func(fd uintptr) bool {
		// An RST after the FIN (CLOSE_WAIT) sets the socket error to EPIPE,
		// before it ECONNRESET; the poller wakes us on it.
		v, e := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		if e == nil && v != 0 {
			reset = syscall.Errno(v)
			return true
		}
		return false
	})
	if reset != nil {
		return &net.OpError{Op: "read", Net: "tcp", Err: reset}
	}
	return err
}
