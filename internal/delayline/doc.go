// Package delayline is a TCP relay for tests and benchmarks that delays each
// direction by a fixed latency without limiting bandwidth: a stand-in for a
// long network path on loopback, where `tc netem` is not available. Only
// tests and benchmarks import it (internal/tunnel's); no shipped binary does.
//
// Each accepted connection is paired with a new connection to the target.
// Per direction, a reader takes bytes as they come, stamps each chunk with
// the time it may leave (arrival + Delay) and queues it; a writer sends every
// chunk whose time has come, several at once with writev when they are due
// together. Bandwidth is limited only by the two copies. What the relay holds
// per direction is bounded by MaxInFlight: past it the reader stops reading
// and TCP back-pressure reaches the sender. A half-close (FIN) travels behind
// the data, with the same delay; a reset (or a failed write) resets both
// sides.
//
// A second bound, MaxInFlightTotal, caps what the whole relay holds, so that
// many connections (e.g. 32 parallel downloads) share one buffer the way
// flows share a link's queue instead of each holding MaxInFlight.
//
// What it does not model: the sender's TCP sees a loopback peer (its ACKs and
// congestion window are not delayed; its bytes are buffered by the relay, up
// to MaxInFlight), there is no loss, and the TCP handshake with the relay is
// local, so connecting costs no round trip. Protocol-level flow control
// carried inside the stream (window updates, replies) does see the delay in
// both directions, which is what the tunnel's benchmarks are about.
package delayline
