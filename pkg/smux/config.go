package smux

import (
	"fmt"
	"math"
	"time"

	xsmux "github.com/xtaci/smux"
)

// ProtocolVersion is the smux protocol version the tunnel speaks. Version 2
// adds per-stream windows (cmdUPD), which is what keeps one slow stream from
// blocking the others.
const ProtocolVersion = 2

// initialWindow is the window smux v2 assumes for a peer before the first
// window update arrives (xtaci/smux initialPeerWindow).
const initialWindow = 256 << 10

// Config tunes a tunnel session. Both ends should use the same keepalive
// settings; the windows may differ.
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
	// MaxStreamBuffer is the per-stream receive window: how many bytes a
	// stream's sender may have in flight before it waits for the reader.
	MaxStreamBuffer int
	// MaxReceiveBuffer is the session-wide receive budget. When the bytes
	// buffered for unread streams reach it, the session stops reading the
	// socket. Keep it many times MaxStreamBuffer.
	MaxReceiveBuffer int
	// ReadBufferSize and WriteBufferSize size the websocket connection's
	// buffers (one pair per session). WriteBufferSize should hold a whole
	// frame (MaxFrameSize+8) so each frame goes out as one websocket frame.
	ReadBufferSize  int
	WriteBufferSize int
}

// DefaultConfig returns the settings used by `tunnel server` and `tunnel
// client` unless flags override them.
func DefaultConfig() Config {
	return Config{
		KeepAliveInterval: 10 * time.Second,
		KeepAliveTimeout:  30 * time.Second,
		MaxFrameSize:      65535,
		MaxStreamBuffer:   256 << 10,
		MaxReceiveBuffer:  32 << 20,
		ReadBufferSize:    256 << 10,
		WriteBufferSize:   64<<10 + 64,
	}
}

// Validate reports the first problem with c, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case c.KeepAliveInterval <= 0:
		return bad("keepalive interval %v must be positive", c.KeepAliveInterval)
	case c.KeepAliveTimeout < 2*c.KeepAliveInterval:
		return bad("keepalive timeout %v must be at least twice the keepalive interval %v", c.KeepAliveTimeout, c.KeepAliveInterval)
	case c.MaxFrameSize < 1024 || c.MaxFrameSize > 65535:
		return bad("max frame size %d must be between 1024 and 65535", c.MaxFrameSize)
	case c.MaxStreamBuffer < c.MaxFrameSize:
		return bad("max stream buffer %d must be at least the max frame size %d", c.MaxStreamBuffer, c.MaxFrameSize)
	case c.MaxReceiveBuffer < 4*max(c.MaxStreamBuffer, initialWindow):
		return bad("max receive buffer %d must be at least 4x the stream window %d", c.MaxReceiveBuffer, max(c.MaxStreamBuffer, initialWindow))
	case c.MaxReceiveBuffer > math.MaxInt32:
		return bad("max receive buffer %d is too large", c.MaxReceiveBuffer)
	case c.ReadBufferSize < 4096:
		return bad("websocket read buffer %d must be at least 4096", c.ReadBufferSize)
	case c.WriteBufferSize < 4096:
		return bad("websocket write buffer %d must be at least 4096", c.WriteBufferSize)
	}
	return nil
}

// SmuxConfig translates c into the xtaci/smux configuration (protocol
// version 2). It does not validate c.
func (c Config) SmuxConfig() *xsmux.Config {
	return &xsmux.Config{
		Version:           ProtocolVersion,
		KeepAliveInterval: c.KeepAliveInterval,
		KeepAliveTimeout:  c.KeepAliveTimeout,
		MaxFrameSize:      c.MaxFrameSize,
		MaxReceiveBuffer:  c.MaxReceiveBuffer,
		MaxStreamBuffer:   c.MaxStreamBuffer,
	}
}
