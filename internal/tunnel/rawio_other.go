//go:build !linux

package tunnel

import "net"

func fastConn(c net.Conn) net.Conn { return c }

type rawListener struct{ net.Listener }
