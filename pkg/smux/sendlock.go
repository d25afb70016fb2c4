package smux

import "sync"

// sendLock serialises writes to the connection with two classes of
// waiters: urgent ones (control frames, small frames, a stream's first
// bytes) go before bulk ones, and each class is served in arrival order.
// Bulk writers take the lock once per frame, so an urgent frame waits for
// at most the frame being written, not for every bulk stream queued: a
// fresh connection's request is not stuck behind hundreds of busy streams.
type sendLock struct {
	mu     sync.Mutex
	busy   bool
	urgent []chan struct{}
	bulk   []chan struct{}
}

// lock acquires the lock; wake is the caller's own channel (capacity 1)
// on which ownership is handed over.
func (l *sendLock) lock(urgent bool, wake chan struct{}) {
	l.mu.Lock()
	if !l.busy {
		l.busy = true
		l.mu.Unlock()
		return
	}
	if urgent {
		l.urgent = append(l.urgent, wake)
	} else {
		l.bulk = append(l.bulk, wake)
	}
	l.mu.Unlock()
	<-wake
}

// tryLock acquires the lock if it is free.
func (l *sendLock) tryLock() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy {
		return false
	}
	l.busy = true
	return true
}

// unlock hands the lock to the next waiter, urgent first.
func (l *sendLock) unlock() {
	l.mu.Lock()
	var next chan struct{}
	switch {
	case len(l.urgent) > 0:
		next = popWaiter(&l.urgent)
	case len(l.bulk) > 0:
		next = popWaiter(&l.bulk)
	default:
		l.busy = false
	}
	l.mu.Unlock()
	if next != nil {
		next <- struct{}{}
	}
}

// popWaiter takes the first waiter off the non-empty queue q; an emptied
// queue lets go of its backing array.
func popWaiter(q *[]chan struct{}) chan struct{} {
	next := (*q)[0]
	(*q)[0] = nil
	*q = (*q)[1:]
	if len(*q) == 0 {
		*q = (*q)[:0:0]
	}
	return next
}
