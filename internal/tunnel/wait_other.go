//go:build !linux

package tunnel

import "syscall"

// waitReadable is a no-op off Linux: the copy simply blocks in Read holding
// its buffer.
func waitReadable(syscall.RawConn) error { return nil }
