package smux

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// rawPeer speaks frames by hand to one of our sessions over net.Pipe, to
// test protocol corners no well-behaved implementation produces.
type rawPeer struct {
	t    testing.TB
	conn net.Conn
	mu   sync.Mutex
	got  []rawFrame
	cond chan struct{}
}

type rawFrame struct {
	cmd  byte
	sid  uint32
	body []byte
}

// newRawPeer starts our session (client or server) against a raw peer.
func newRawPeer(t testing.TB, cfg Config, oursClient bool) (*Session, *rawPeer) {
	t.Helper()
	a, b := net.Pipe()
	var s *Session
	var err error
	if oursClient {
		s, err = Client(a, cfg)
	} else {
		s, err = Server(a, cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{t: t, conn: b, cond: make(chan struct{}, 1)}
	go p.readLoop()
	t.Cleanup(func() { s.Close(); b.Close() })
	return s, p
}

func (p *rawPeer) readLoop() {
	var h frameHeader
	for {
		if _, err := io.ReadFull(p.conn, h[:]); err != nil {
			return
		}
		body := make([]byte, h.length())
		if _, err := io.ReadFull(p.conn, body); err != nil {
			return
		}
		p.mu.Lock()
		p.got = append(p.got, rawFrame{h.cmd(), h.streamID(), body})
		p.mu.Unlock()
		notify(p.cond)
	}
}

func (p *rawPeer) send(cmd byte, sid uint32, body []byte) {
	p.t.Helper()
	b := make([]byte, headerSize+len(body))
	putHeader(b, cmd, len(body), sid)
	copy(b[headerSize:], body)
	_ = p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("raw peer send: %v", err)
	}
}

// sendLoose sends a frame the session may reject before reading it all.
func (p *rawPeer) sendLoose(cmd byte, sid uint32, body []byte) {
	b := make([]byte, headerSize+len(body))
	putHeader(b, cmd, len(body), sid)
	copy(b[headerSize:], body)
	_ = p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = p.conn.Write(b)
}

func (p *rawPeer) sendUPD(sid, consumed, window uint32) {
	var b [8]byte
	binary.LittleEndian.PutUint32(b[:], consumed)
	binary.LittleEndian.PutUint32(b[4:], window)
	p.send(cmdUPD, sid, b[:])
}

// waitFrame waits for a frame matching f (and returns it).
func (p *rawPeer) waitFrame(what string, f func(rawFrame) bool) rawFrame {
	p.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		for _, fr := range p.got {
			if f(fr) {
				p.mu.Unlock()
				return fr
			}
		}
		p.mu.Unlock()
		select {
		case <-p.cond:
		case <-deadline:
			p.t.Fatalf("raw peer: no %s frame", what)
		}
	}
}

// count returns how many received frames match f.
func (p *rawPeer) count(f func(rawFrame) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, fr := range p.got {
		if f(fr) {
			n++
		}
	}
	return n
}

func isCmd(cmd byte, sid uint32) func(rawFrame) bool {
	return func(f rawFrame) bool { return f.cmd == cmd && f.sid == sid }
}
