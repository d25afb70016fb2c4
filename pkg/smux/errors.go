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

	// ErrSessionClosed is what every Read, Write, OpenStream and
	// AcceptStream returns once the session is gone: closed locally, socket
	// error, keepalive timeout or protocol error. It never matches io.EOF:
	// a stream cut by its session did not end cleanly.
	ErrSessionClosed = errors.New("smux session closed")
	// ErrReset means the stream was aborted: the peer reset it, it broke the
	// flow-control rules, or it stopped taking data after its FIN (see
	// Config.StalledWriteTimeout).
	ErrReset = errors.New("smux stream reset")
	// ErrStreamLimit means the session already has Config.MaxStreams streams.
	ErrStreamLimit = errors.New("smux stream limit reached")
	// ErrProtocol means the peer sent a frame that breaks the protocol.
	ErrProtocol = errors.New("smux protocol error")
	// ErrWindowExceeded means the peer sent more than the window it was
	// granted on a stream; the stream is reset (errors match ErrReset too).
	ErrWindowExceeded = errors.New("smux peer exceeded the stream window")
	// ErrStreamClosed is returned by Read and Write after the local Close or
	// Reset, and by Write after CloseWrite.
	ErrStreamClosed = errors.New("smux stream closed")
)
