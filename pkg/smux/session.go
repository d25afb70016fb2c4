package smux

import (
	"fmt"
	"io"

	xsmux "github.com/xtaci/smux"
)

// Session is a multiplexed tunnel session; Stream is one stream on it.
// internal/tunnel uses only these names, so the session implementation can
// change behind them.
type (
	Session = xsmux.Session
	Stream  = xsmux.Stream
)

// Server starts the accepting side of a session over conn (usually a *Conn).
// Either side may open streams; the roles only split the stream ID space.
func Server(conn io.ReadWriteCloser, cfg Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := xsmux.Server(conn, cfg.SmuxConfig())
	if err != nil {
		return nil, fmt.Errorf("start smux server session: %w", err)
	}
	return s, nil
}

// Client starts the dialing side of a session over conn.
func Client(conn io.ReadWriteCloser, cfg Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := xsmux.Client(conn, cfg.SmuxConfig())
	if err != nil {
		return nil, fmt.Errorf("start smux client session: %w", err)
	}
	return s, nil
}
