package tunnel

import (
	"syscall"
	"unsafe"
)

// waitReadable parks on the runtime poller until the socket has data, EOF
// or an error, without reading anything: a MSG_PEEK|MSG_DONTWAIT probe
// decides, so an idle connection holds no copy buffer.
func waitReadable(rc syscall.RawConn) error {
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		return errno != syscall.EAGAIN && errno != syscall.EINTR
	})
}
