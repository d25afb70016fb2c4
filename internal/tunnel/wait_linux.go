package tunnel

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// readPooled reads from a socket into a pooled buffer that is taken only
// when data is there: the read syscall runs inside RawConn.Read, and on
// EAGAIN the buffer goes back to the pool before the goroutine parks on the
// poller. The syscall count is the same as net.Conn.Read (read, EAGAIN,
// wait, read), but a thousand idle connections hold no copy buffers.
// It reads at most limit bytes and returns bp == nil with io.EOF at end of
// stream.
func readPooled(rc syscall.RawConn, pool *bufPool, limit int) (bp *[]byte, n int, err error) {
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			bp = pool.get()
			n, rerr = rawRead(fd, (*bp)[:min(limit, len(*bp))])
			switch {
			case rerr == syscall.EINTR:
				pool.put(bp)
				continue
			case rerr == syscall.EAGAIN:
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
	if rerr != nil {
		pool.put(bp)
		return nil, 0, &net.OpError{Op: "read", Net: "tcp", Err: rerr}
	}
	if n == 0 {
		pool.put(bp)
		return nil, 0, io.EOF
	}
	return bp, n, nil
}

const haveReadPooled = true

// rawRead is read(2) as a raw system call (see rawTCPConn): the socket is
// non-blocking, so it never blocks.
func rawRead(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
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
