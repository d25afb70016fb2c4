package smux

import (
	"fmt"
	"time"
)

// ProtocolVersion is the smux protocol version the tunnel speaks. Version 2
// adds per-stream windows (cmdUPD), which is what keeps one slow stream from
// blocking the others.
const ProtocolVersion = 2

// initialWindow is the window smux v2 assumes for a peer before the first
// window update arrives (xtaci/smux's initial peer window). Every stream
// starts with it (or with SmallInitialWindow when both ends negotiated
// FeatureSmallWindow); a receiver cannot refuse it.
const initialWindow = 256 << 10

// Limits checked by Validate.
const (
	minStreamWindow = initialWindow
	minInitial      = 16 << 10
	maxStreamWindow = 256 << 20
	maxBudget       = 1 << 30
	maxMaxStreams   = 1 << 16
)

// Config tunes a tunnel session. Both ends should use the same keepalive
// settings; the windows and caps may differ.
type Config struct {
	// KeepAliveInterval is how often a NOP frame is sent. NOPs are websocket
	// data messages, so they also keep ingress/load-balancer idle timers
	// (nginx: 60s) from closing an idle tunnel.
	KeepAliveInterval time.Duration
	// KeepAliveTimeout is how long a session may receive nothing before it is
	// declared dead. It is also the websocket read deadline while waiting for
	// data and the write deadline of every websocket write.
	KeepAliveTimeout time.Duration
	// MaxFrameSize is the largest smux data frame (at most 65535 bytes).
	MaxFrameSize int
	// InitialWindow is the window every stream starts with, both ways. smux
	// v2 fixes it at 256 KiB; a smaller one must be agreed by both ends
	// (FeatureSmallWindow, see WithFeatures), or the peer's first burst
	// breaks it.
	InitialWindow int
	// MaxStreamWindow is the largest receive window one stream may grow to.
	// A stream's window doubles while its reader drains a window in under
	// about two round trips (see window.go), within SessionBudget.
	MaxStreamWindow int
	// SessionBudget bounds the sum of the receive windows of a session's
	// streams: a window grows only while the sum stays within it. A
	// stream's initial window is granted even past it, so a session buffers
	// at most SessionBudget + MaxStreams × InitialWindow of unread data.
	SessionBudget int
	// MaxStreams caps the streams open on a session, whichever side opened
	// them. OpenStream past it fails with ErrStreamLimit; a peer's SYN past
	// it is refused at once (reset, or FIN without the reset extension) and
	// counted in Session.RefusedStreams.
	MaxStreams int
	// StalledWriteTimeout bounds a Write blocked on a full window after the
	// peer's FIN when the reset extension is off: a peer that closed its
	// stream without reading (xtaci/smux drops such data silently) would
	// otherwise hold the writer forever. The Write then fails with ErrReset.
	StalledWriteTimeout time.Duration
	// Reset enables the stream reset extension (cmdRST). Set it only when
	// the peer agreed to it (the tunnel negotiates it on the websocket
	// upgrade); a peer that does not know cmdRST drops the whole session on
	// receiving one.
	Reset bool
	// ReadBufferSize and WriteBufferSize size the websocket connection's
	// buffers (one pair per session). WriteBufferSize should hold a whole
	// frame (MaxFrameSize+8) so each frame goes out as one websocket frame.
	ReadBufferSize  int
	WriteBufferSize int
}

// DefaultConfig returns the settings used by `tunnel server` and `tunnel
// client` unless flags override them.
//
// Worst case with these defaults, per session: the 64 MiB budget plus 1024
// streams × the initial window of unread data, that is 128 MiB between two
// ends that agreed on the 64 KiB initial window (FeatureSmallWindow) and
// 320 MiB with a plain smux v2 peer (256 KiB). 250 streams that never read
// hold their initial windows (16 MiB) plus what they had grown to, within
// the budget.
func DefaultConfig() Config {
	return Config{
		KeepAliveInterval:   10 * time.Second,
		KeepAliveTimeout:    30 * time.Second,
		MaxFrameSize:        65535,
		InitialWindow:       initialWindow,
		MaxStreamWindow:     32 << 20,
		SessionBudget:       64 << 20,
		MaxStreams:          1024,
		StalledWriteTimeout: 30 * time.Second,
		ReadBufferSize:      256 << 10,
		WriteBufferSize:     64<<10 + 64,
	}
}

// ConfigError names the Config field that failed validation. It matches
// ErrInvalidConfig with errors.Is.
type ConfigError struct {
	Field string // e.g. "MaxStreams"
	Msg   string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInvalidConfig, e.Field, e.Msg)
}

// Unwrap makes errors.Is(err, ErrInvalidConfig) hold.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// Validate reports the first problem with c as a *ConfigError.
func (c Config) Validate() error {
	bad := func(field, format string, a ...any) error {
		return &ConfigError{Field: field, Msg: fmt.Sprintf(format, a...)}
	}
	switch {
	case c.KeepAliveInterval <= 0:
		return bad("KeepAliveInterval", "%v must be positive", c.KeepAliveInterval)
	case c.KeepAliveTimeout < 2*c.KeepAliveInterval:
		return bad("KeepAliveTimeout", "%v must be at least twice the keepalive interval %v", c.KeepAliveTimeout, c.KeepAliveInterval)
	case c.MaxFrameSize < 1024 || c.MaxFrameSize > 65535:
		return bad("MaxFrameSize", "%d must be between 1024 and 65535", c.MaxFrameSize)
	case c.InitialWindow < minInitial || c.InitialWindow > initialWindow:
		return bad("InitialWindow", "%d must be between %d and %d", c.InitialWindow, minInitial, initialWindow)
	case c.MaxStreamWindow < minStreamWindow || c.MaxStreamWindow > maxStreamWindow:
		return bad("MaxStreamWindow", "%d must be between %d and %d", c.MaxStreamWindow, minStreamWindow, maxStreamWindow)
	case c.SessionBudget < 4*initialWindow || c.SessionBudget > maxBudget:
		return bad("SessionBudget", "%d must be between %d and %d", c.SessionBudget, 4*initialWindow, int64(maxBudget))
	case c.MaxStreams < 1 || c.MaxStreams > maxMaxStreams:
		return bad("MaxStreams", "%d must be between 1 and %d", c.MaxStreams, maxMaxStreams)
	case c.StalledWriteTimeout < 100*time.Millisecond || c.StalledWriteTimeout > time.Hour:
		return bad("StalledWriteTimeout", "%v must be between 100ms and 1h", c.StalledWriteTimeout)
	case c.ReadBufferSize < 4096 || c.ReadBufferSize > 16<<20:
		return bad("ReadBufferSize", "%d must be between 4096 and 16777216", c.ReadBufferSize)
	case c.WriteBufferSize < 4096 || c.WriteBufferSize > 16<<20:
		return bad("WriteBufferSize", "%d must be between 4096 and 16777216", c.WriteBufferSize)
	}
	return nil
}
