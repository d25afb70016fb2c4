package smux

import (
	"math/bits"
	"sync"
)

// Receive buffers come from power-of-two size classes between minChunk and
// 64 KiB (the largest frame), so a stream's buffered bytes cost at most
// about twice their size in memory. Small frames are appended to the
// stream's last chunk when it has room (see recvQueue.push), so a flood of
// one-byte frames costs little more than its bytes.
const (
	minChunkShift = 11 // 2 KiB
	maxChunkShift = 16 // 64 KiB
	minChunk      = 1 << minChunkShift
)

var chunkPools [maxChunkShift - minChunkShift + 1]sync.Pool

func chunkClass(n int) int {
	if n <= minChunk {
		return 0
	}
	return bits.Len(uint(n-1)) - minChunkShift
}

// getChunk returns a buffer of length n whose capacity is n's size class.
func getChunk(n int) *[]byte {
	c := chunkClass(n)
	if p, ok := chunkPools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minChunkShift))
	return &b
}

func putChunk(p *[]byte) {
	c := cap(*p)
	if c < minChunk || c&(c-1) != 0 || c > 1<<maxChunkShift {
		return
	}
	chunkPools[bits.Len(uint(c))-1-minChunkShift].Put(p)
}

// chunk is received data not yet read: (*buf)[r:len(*buf)].
type chunk struct {
	buf *[]byte
	r   int
}

// recvQueue is a stream's unread data, guarded by the stream's mutex.
type recvQueue struct {
	chunks []chunk // chunks[head:] are unread
	head   int
	n      int // unread bytes
}

// push appends data the queue takes ownership of.
func (q *recvQueue) push(p *[]byte) {
	q.chunks = append(q.chunks, chunk{buf: p})
	q.n += len(*p)
}

// pushCopy copies b (a small frame body) into the last chunk if it has
// room, else into a new chunk.
func (q *recvQueue) pushCopy(b []byte) {
	if k := len(q.chunks); k > q.head {
		last := q.chunks[k-1].buf
		if cap(*last)-len(*last) >= len(b) {
			*last = append(*last, b...)
			q.n += len(b)
			return
		}
	}
	p := getChunk(max(len(b), minChunk))
	*p = append((*p)[:0], b...)
	q.push(p)
}

// read copies unread bytes into b, recycling drained chunks.
func (q *recvQueue) read(b []byte) int {
	n := 0
	for n < len(b) && q.head < len(q.chunks) {
		c := &q.chunks[q.head]
		m := copy(b[n:], (*c.buf)[c.r:])
		n += m
		c.r += m
		if c.r == len(*c.buf) {
			putChunk(c.buf)
			*c = chunk{}
			q.head++
		}
	}
	q.n -= n
	if q.head == len(q.chunks) {
		q.chunks = q.chunks[:0]
		q.head = 0
	}
	return n
}

// takeAll moves every unread chunk into dst (for WriteTo, which writes them
// out without copying).
func (q *recvQueue) takeAll(dst []chunk) []chunk {
	dst = append(dst, q.chunks[q.head:]...)
	clear(q.chunks)
	q.chunks = q.chunks[:0]
	q.head = 0
	q.n = 0
	return dst
}

// free recycles everything unread.
func (q *recvQueue) free() {
	for _, c := range q.chunks[q.head:] {
		putChunk(c.buf)
	}
	q.chunks = nil
	q.head = 0
	q.n = 0
}
