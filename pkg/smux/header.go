package smux

import (
	"fmt"
	"io"
)

// Stream header layout (version 1), sent by the side that opens a stream
// before any payload:
//
//	+---------+----------+------------------+
//	| version | name len | name (len bytes) |
//	|  1 byte |  1 byte  |   1..63 bytes    |
//	+---------+----------+------------------+
//
// The name is the listener the stream belongs to; the receiving side maps it
// to its own configuration and never to an address taken from the wire.
const (
	// HeaderVersion is the stream header version this build writes and reads.
	HeaderVersion = 1
	// MaxListenerNameLen bounds listener names (and so the header).
	MaxListenerNameLen = 63
	// MaxHeaderLen is the longest possible encoded header.
	MaxHeaderLen = 2 + MaxListenerNameLen
)

// Header opens every stream.
type Header struct {
	// Listener is the name of the server listener that accepted the
	// connection, e.g. "gateway".
	Listener string
}

// ValidateListenerName checks that name can travel in a Header: 1 to 63
// bytes of [A-Za-z0-9._-].
func ValidateListenerName(name string) error {
	if len(name) == 0 || len(name) > MaxListenerNameLen {
		return fmt.Errorf("%w: %q must be 1 to %d characters", ErrListenerName, name, MaxListenerNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return fmt.Errorf("%w: %q has a character outside [A-Za-z0-9._-]", ErrListenerName, name)
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// AppendHeader appends the encoding of h to dst.
func AppendHeader(dst []byte, h Header) ([]byte, error) {
	if err := ValidateListenerName(h.Listener); err != nil {
		return dst, err
	}
	dst = append(dst, HeaderVersion, byte(len(h.Listener)))
	return append(dst, h.Listener...), nil
}

// ParseHeader decodes a header from the start of b and returns it with the
// number of bytes it used. If b holds only a prefix of a valid header it
// returns ErrShortHeader; any other error means the header is invalid and the
// stream must be dropped.
func ParseHeader(b []byte) (Header, int, error) {
	if len(b) < 1 {
		return Header{}, 0, ErrShortHeader
	}
	if b[0] != HeaderVersion {
		return Header{}, 0, fmt.Errorf("%w: %d", ErrHeaderVersion, b[0])
	}
	if len(b) < 2 {
		return Header{}, 0, ErrShortHeader
	}
	n := int(b[1])
	if n == 0 || n > MaxListenerNameLen {
		return Header{}, 0, fmt.Errorf("%w: length %d", ErrListenerName, n)
	}
	if len(b) < 2+n {
		return Header{}, 0, ErrShortHeader
	}
	name := b[2 : 2+n]
	for _, c := range name {
		if !nameByte(c) {
			return Header{}, 0, fmt.Errorf("%w: byte 0x%02x", ErrListenerName, c)
		}
	}
	return Header{Listener: string(name)}, 2 + n, nil
}

// ReadHeader reads exactly one header from r and nothing more, so the bytes
// after it stay in r for the payload copy. Callers should bound the wait
// with a read deadline.
func ReadHeader(r io.Reader) (Header, error) {
	var buf [MaxHeaderLen]byte
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return Header{}, fmt.Errorf("read stream header: %w", err)
	}
	need := 2
	if buf[0] == HeaderVersion {
		need += int(buf[1])
	}
	if need > 2 && need <= MaxHeaderLen {
		if _, err := io.ReadFull(r, buf[2:need]); err != nil {
			return Header{}, fmt.Errorf("read stream header: %w", err)
		}
	}
	h, _, err := ParseHeader(buf[:min(need, MaxHeaderLen)])
	if err != nil {
		return Header{}, fmt.Errorf("parse stream header: %w", err)
	}
	return h, nil
}

// WriteHeader writes h to w in one Write call.
func WriteHeader(w io.Writer, h Header) error {
	var buf [MaxHeaderLen]byte
	b, err := AppendHeader(buf[:0], h)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write stream header: %w", err)
	}
	return nil
}

// Reply is the one status byte the accepting side writes back on a stream
// after handling its header: ReplyOK before any payload, or a refusal
// followed by closing the stream.
type Reply byte

// Replies. Unknown values are treated as refusals.
const (
	ReplyOK              Reply = 0
	ReplyUnknownListener Reply = 1
	ReplyDialFailed      Reply = 2
	ReplyDraining        Reply = 3
	ReplyBadHeader       Reply = 4
)

// replyNames are the metric-label-friendly names of the known replies.
var replyNames = [...]string{
	ReplyOK:              "ok",
	ReplyUnknownListener: "unknown_listener",
	ReplyDialFailed:      "dial_failed",
	ReplyDraining:        "draining",
	ReplyBadHeader:       "bad_header",
}

// String returns a metric-label-friendly reason ("unknown_reply" for a
// value this package does not define).
func (r Reply) String() string {
	if int(r) < len(replyNames) {
		return replyNames[r]
	}
	return "unknown_reply"
}

// Refusals returns every refusal this package defines: each Reply but
// ReplyOK, in value order.
func Refusals() []Reply {
	rs := make([]Reply, 0, len(replyNames)-1)
	for r := ReplyOK + 1; int(r) < len(replyNames); r++ {
		rs = append(rs, r)
	}
	return rs
}

// ReadReply reads the status byte.
func ReadReply(r io.Reader) (Reply, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("read stream reply: %w", err)
	}
	return Reply(b[0]), nil
}

// WriteReply writes the status byte.
func WriteReply(w io.Writer, r Reply) error {
	if _, err := w.Write([]byte{byte(r)}); err != nil {
		return fmt.Errorf("write stream reply: %w", err)
	}
	return nil
}
