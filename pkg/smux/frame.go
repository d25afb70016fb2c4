package smux

import (
	"encoding/binary"
	"fmt"
)

// smux v2 frame commands. cmdRST is this package's extension, sent only to
// a peer that negotiated it (Config.Reset).
const (
	cmdSYN byte = iota // open a stream
	cmdFIN             // the sender will write no more on the stream (half-close)
	cmdPSH             // data
	cmdNOP             // keepalive
	cmdUPD             // window update: consumed uint32 LE, window uint32 LE
	cmdRST             // abort the stream (extension)
)

const (
	// headerSize is the frame header: version, command, length (uint16
	// LE), stream id (uint32 LE).
	headerSize = 8
	// updSize is the body of a cmdUPD frame.
	updSize = 8
)

// frameHeader is one frame header on the wire.
type frameHeader [headerSize]byte

func (h *frameHeader) version() byte    { return h[0] }
func (h *frameHeader) cmd() byte        { return h[1] }
func (h *frameHeader) length() int      { return int(binary.LittleEndian.Uint16(h[2:])) }
func (h *frameHeader) streamID() uint32 { return binary.LittleEndian.Uint32(h[4:]) }

func (h frameHeader) String() string {
	return fmt.Sprintf("ver=%d cmd=%d len=%d sid=%d", h.version(), h.cmd(), h.length(), h.streamID())
}

// putHeader encodes a frame header into b (at least headerSize bytes).
func putHeader(b []byte, cmd byte, length int, sid uint32) {
	b[0] = ProtocolVersion
	b[1] = cmd
	binary.LittleEndian.PutUint16(b[2:], uint16(length))
	binary.LittleEndian.PutUint32(b[4:], sid)
}

// appendControl appends a body-less control frame.
func appendControl(b []byte, cmd byte, sid uint32) []byte {
	var h frameHeader
	putHeader(h[:], cmd, 0, sid)
	return append(b, h[:]...)
}

// appendUPD appends a window update frame.
func appendUPD(b []byte, sid, consumed, window uint32) []byte {
	var f [headerSize + updSize]byte
	putHeader(f[:], cmdUPD, updSize, sid)
	binary.LittleEndian.PutUint32(f[8:], consumed)
	binary.LittleEndian.PutUint32(f[12:], window)
	return append(b, f[:]...)
}

// check reports whether h is a well-formed frame header for a session that
// has (or has not) negotiated cmdRST. Data frames are checked against the
// stream window elsewhere.
func (h *frameHeader) check(resetEnabled bool) error {
	if h.version() != ProtocolVersion {
		return fmt.Errorf("%w: version %d in %v", ErrProtocol, h.version(), *h)
	}
	switch h.cmd() {
	case cmdSYN, cmdFIN, cmdNOP:
		if h.length() != 0 {
			return fmt.Errorf("%w: body on %v", ErrProtocol, *h)
		}
	case cmdRST:
		if !resetEnabled {
			return fmt.Errorf("%w: reset not negotiated: %v", ErrProtocol, *h)
		}
		if h.length() != 0 {
			return fmt.Errorf("%w: body on %v", ErrProtocol, *h)
		}
	case cmdUPD:
		if h.length() != updSize {
			return fmt.Errorf("%w: window update of %d bytes", ErrProtocol, h.length())
		}
	case cmdPSH:
	default:
		return fmt.Errorf("%w: unknown command in %v", ErrProtocol, *h)
	}
	return nil
}
