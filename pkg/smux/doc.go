// Package smux is the wire layer of l5d-tunnel: a net.Conn adapter over a
// gorilla/websocket connection, an xtaci/smux session (protocol version 2,
// per-stream flow control) on top of it, and the small versioned header that
// opens every stream and names the listener it belongs to.
//
// Layering, from the socket up:
//
//	TCP (or TLS) ── websocket, binary messages ── Conn (net.Conn) ── smux v2 session ── streams
//
// Each smux frame travels as one websocket binary message. Dead peers are
// detected twice: smux sends a NOP data frame every KeepAliveInterval and
// closes the session when nothing arrives for KeepAliveTimeout, and Conn arms
// a websocket read deadline whenever it waits for data, and a write deadline
// on every write, so a peer that vanished silently (or stopped reading)
// surfaces as an error within KeepAliveTimeout.
//
// Head-of-line blocking: with protocol version 2 a stream's sender never has
// more than MaxStreamBuffer bytes (256 KiB before the first window update)
// unacknowledged, so a stream whose reader stalls parks at most that much in
// the receiver, and the session keeps reading frames for every other stream
// as long as fewer than MaxReceiveBuffer/MaxStreamBuffer streams are stalled
// at once.
//
// The package never logs; callers do.
package smux
