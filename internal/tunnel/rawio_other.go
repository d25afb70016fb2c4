//go:build !linux

package tunnel

import (
	"errors"
	"net"
	"syscall"
)

func fastConn(c net.Conn) net.Conn { return c }

type rawListener struct{ net.Listener }

// readPooled is not available off Linux; localToStream falls back to
// net.Conn.Read, which holds its buffer while it waits.
func readPooled(syscall.RawConn, *bufPool, int) (*[]byte, int, error) {
	return nil, 0, errors.ErrUnsupported
}

const haveReadPooled = false

// waitReset is not available here: a reset after the peer's FIN is noticed
// only when the stream direction fails.
func waitReset(syscall.RawConn) error { return nil }
