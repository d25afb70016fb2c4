package smux

import "errors"

// Sentinel errors. Wrapped errors returned by this package match them with
// errors.Is.
var (
	// ErrShortHeader means the input ended before a whole stream header.
	ErrShortHeader = errors.New("stream header truncated")
	// ErrHeaderVersion means the stream header has a version this build does not speak.
	ErrHeaderVersion = errors.New("unsupported stream header version")
	// ErrListenerName means a listener name is empty, too long or has characters
	// outside [A-Za-z0-9._-].
	ErrListenerName = errors.New("invalid listener name")
	// ErrNotBinary means the peer sent a websocket message that is not binary.
	ErrNotBinary = errors.New("websocket message is not binary")
	// ErrInvalidConfig means a Config failed validation.
	ErrInvalidConfig = errors.New("invalid smux config")
)
