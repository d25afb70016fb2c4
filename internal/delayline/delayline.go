package delayline

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// DefaultMaxInFlight is the default bound on the bytes held per connection
// and direction: at 25 ms one way it allows 2.5 GiB/s.
const DefaultMaxInFlight = 64 << 20

// DefaultMaxInFlightTotal is the default bound on the bytes held by the
// whole relay, all connections and directions together.
const DefaultMaxInFlightTotal = 256 << 20

const (
	readSize  = 256 << 10 // one read from the source socket
	copyBelow = readSize / 2
	maxBatch  = 4 << 20 // bytes written with one writev
)

// Config sets the delay line's behaviour.
type Config struct {
	// Delay is added to every byte in each direction (one way: the round
	// trip grows by twice Delay).
	Delay time.Duration
	// MaxInFlight bounds the bytes held per connection and direction
	// (0: DefaultMaxInFlight). The memory held is at most about twice that.
	MaxInFlight int
	// MaxInFlightTotal bounds the bytes held by the relay, all connections
	// and directions together (0: DefaultMaxInFlightTotal).
	MaxInFlightTotal int
	// DialTimeout bounds the dial to the target (0: 5 s).
	DialTimeout time.Duration
}

// Relay accepts connections and relays them to one target through the delay.
type Relay struct {
	ln     net.Listener
	target string
	cfg    Config
	total  *budget

	mu     sync.Mutex
	pairs  map[*pair]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Listen starts a relay on addr (e.g. "127.0.0.1:0") to target.
func Listen(addr, target string, cfg Config) (*Relay, error) {
	if cfg.Delay < 0 {
		return nil, fmt.Errorf("delayline: negative delay %v", cfg.Delay)
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxInFlightTotal == 0 {
		cfg.MaxInFlightTotal = DefaultMaxInFlightTotal
	}
	if cfg.MaxInFlight < 0 || cfg.MaxInFlightTotal < 0 {
		return nil, fmt.Errorf("delayline: negative max in flight %d / %d", cfg.MaxInFlight, cfg.MaxInFlightTotal)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("delayline: listen %s: %w", addr, err)
	}
	r := &Relay{ln: ln, target: target, cfg: cfg, pairs: map[*pair]struct{}{}}
	r.total = &budget{max: cfg.MaxInFlightTotal}
	r.total.cond.L = &r.total.mu
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// Addr is the relay's listening address.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Close stops accepting, resets every relayed connection and waits for the
// relay's goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	pairs := make([]*pair, 0, len(r.pairs))
	for p := range r.pairs {
		pairs = append(pairs, p)
	}
	r.mu.Unlock()
	err := r.ln.Close()
	for _, p := range pairs {
		p.abort()
	}
	r.wg.Wait()
	return err
}

func (r *Relay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE
			continue
		}
		r.wg.Add(1)
		go r.handle(c.(*net.TCPConn))
	}
}

func (r *Relay) handle(a *net.TCPConn) {
	defer r.wg.Done()
	u, err := net.DialTimeout("tcp", r.target, r.cfg.DialTimeout)
	if err != nil {
		reset(a)
		return
	}
	p := &pair{a: a, b: u.(*net.TCPConn)}
	p.lines[0] = newLine(p.a, p.b, r.cfg, r.total)
	p.lines[1] = newLine(p.b, p.a, r.cfg, r.total)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		p.abort()
		return
	}
	r.pairs[p] = struct{}{}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range p.lines {
		wg.Go(func() { l.readLoop() })
		wg.Go(func() { l.writeLoop(p) })
	}
	wg.Wait()
	p.close()
	r.mu.Lock()
	delete(r.pairs, p)
	r.mu.Unlock()
}

// reset closes c with an RST instead of a FIN.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// pair is one relayed connection: a (accepted) and b (dialed).
type pair struct {
	a, b  *net.TCPConn
	lines [2]*line // a→b, b→a

	mu       sync.Mutex
	finished int // directions whose FIN was delivered
	done     bool
}

// finish records a delivered FIN; the pair is closed when both are.
func (p *pair) finish() {
	p.mu.Lock()
	p.finished++
	both := p.finished == 2
	p.mu.Unlock()
	if both {
		p.close()
	}
}

// close ends the pair normally (both FINs delivered, or after abort).
func (p *pair) close() {
	if p.end() {
		_ = p.a.Close()
		_ = p.b.Close()
	}
}

// abort resets both sides and drops whatever is queued.
func (p *pair) abort() {
	if p.end() {
		reset(p.a)
		reset(p.b)
	}
}

// end marks the pair done and stops its lines; it reports false if the
// pair was already done, so that only the first close or abort acts.
func (p *pair) end() bool {
	p.mu.Lock()
	done := p.done
	p.done = true
	p.mu.Unlock()
	if done {
		return false
	}
	for _, l := range p.lines {
		l.stop()
	}
	return true
}

type kind uint8

const (
	data kind = iota
	fin
	rst
)

type chunk struct {
	due  time.Time
	kind kind
	data []byte
	buf  *[]byte // pooled buffer behind data, if any
}

// budget is the relay-wide bound on held bytes.
type budget struct {
	mu   sync.Mutex
	cond sync.Cond
	used int
	max  int
}

// wait blocks while the relay holds its maximum, unless l is stopped.
func (b *budget) wait(l *line) {
	b.mu.Lock()
	for b.used >= b.max && !l.isStopped() {
		b.cond.Wait()
	}
	b.mu.Unlock()
}

func (b *budget) add(n int) {
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
	if n < 0 {
		b.cond.Broadcast()
	}
}

// wake lets waiters re-check whether their line was stopped.
func (b *budget) wake() {
	b.mu.Lock()
	b.cond.Broadcast()
	b.mu.Unlock()
}

var pool = sync.Pool{New: func() any { b := make([]byte, readSize); return &b }}

// line is one direction: bytes read from src wait in q until due, then go
// to dst.
type line struct {
	src, dst *net.TCPConn
	delay    time.Duration
	max      int
	total    *budget

	mu       sync.Mutex
	cond     sync.Cond
	q        []chunk
	inFlight int
	stopped  bool
}

func newLine(src, dst *net.TCPConn, cfg Config, total *budget) *line {
	l := &line{src: src, dst: dst, delay: cfg.Delay, max: cfg.MaxInFlight, total: total}
	l.cond.L = &l.mu
	return l
}

// stop wakes both loops and drops the queue. A batch being written stays
// counted until the writer is done with it.
func (l *line) stop() {
	l.mu.Lock()
	l.stopped = true
	queued := 0
	for _, c := range l.q {
		queued += len(c.data)
		if c.buf != nil {
			pool.Put(c.buf)
		}
	}
	l.q = nil
	l.inFlight -= queued
	l.cond.Broadcast()
	l.mu.Unlock()
	l.total.add(-queued)
	l.total.wake()
}

func (l *line) isStopped() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}

func (l *line) push(c chunk) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.q = append(l.q, c)
	l.inFlight += len(c.data)
	l.total.add(len(c.data))
	l.cond.Broadcast()
	return true
}

func (l *line) readLoop() {
	for {
		l.mu.Lock()
		for l.inFlight >= l.max && !l.stopped {
			l.cond.Wait()
		}
		stopped := l.stopped
		l.mu.Unlock()
		if stopped {
			return
		}
		l.total.wait(l)
		bp := pool.Get().(*[]byte)
		n, err := l.src.Read(*bp)
		due := time.Now().Add(l.delay)
		if n > 0 {
			c := chunk{due: due, kind: data}
			if n < copyBelow {
				c.data = append([]byte(nil), (*bp)[:n]...)
				pool.Put(bp)
			} else {
				c.data, c.buf = (*bp)[:n], bp
			}
			if !l.push(c) {
				if c.buf != nil {
					pool.Put(c.buf)
				}
				return
			}
		} else {
			pool.Put(bp)
		}
		if err != nil {
			k := rst
			if errors.Is(err, io.EOF) {
				k = fin
			}
			l.push(chunk{due: due, kind: k})
			return
		}
	}
}

func (l *line) writeLoop(p *pair) {
	var batch []chunk
	var bufs net.Buffers
	for {
		l.mu.Lock()
		for len(l.q) == 0 && !l.stopped {
			l.cond.Wait()
		}
		if l.stopped {
			l.mu.Unlock()
			return
		}
		due := l.q[0].due
		l.mu.Unlock()
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}

		// Everything due now, up to maxBatch bytes, stopping at a marker.
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			return
		}
		now, size := time.Now(), 0
		batch = batch[:0]
		for len(l.q) > 0 && l.q[0].kind == data && !l.q[0].due.After(now) && size < maxBatch {
			batch = append(batch, l.q[0])
			size += len(l.q[0].data)
			l.q[0] = chunk{}
			l.q = l.q[1:]
		}
		marker := data
		if len(batch) == 0 && len(l.q) > 0 && l.q[0].kind != data {
			marker = l.q[0].kind
			l.q[0] = chunk{}
			l.q = l.q[1:]
		}
		l.mu.Unlock()

		switch marker {
		case fin:
			_ = l.dst.CloseWrite()
			p.finish()
			return
		case rst:
			p.abort()
			return
		}
		bufs = bufs[:0]
		for _, c := range batch {
			bufs = append(bufs, c.data)
		}
		_, err := bufs.WriteTo(l.dst)
		for i, c := range batch {
			if c.buf != nil {
				pool.Put(c.buf)
			}
			batch[i] = chunk{}
		}
		l.mu.Lock()
		l.inFlight -= size
		l.cond.Broadcast()
		l.mu.Unlock()
		l.total.add(-size)
		if err != nil {
			p.abort()
			return
		}
	}
}
