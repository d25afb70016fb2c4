// Package smux is the wire layer of l5d-tunnel: a net.Conn adapter over a
// gorilla/websocket connection (Conn), a session layer speaking smux protocol
// version 2 (Session, Stream), and the small versioned header that opens
// every stream and names the listener it belongs to. Any package may import
// it (it imports only gorilla/websocket); internal/tunnel does.
//
// Layering, from the socket up:
//
//	TCP (or TLS) ── websocket, binary messages ── Conn ── smux v2 session ── streams
//
// The session is written here from the protocol and stays wire-compatible
// with xtaci/smux v2 (frame: version, command, length uint16 LE, stream id
// uint32 LE; SYN, FIN, PSH, NOP, UPD with consumed and window uint32 LE; a
// 256 KiB window assumed before the first update); interop_test.go runs it
// against xtaci/smux in both roles. Frames may span websocket messages:
// control frames queued while a data frame waits for the connection go out
// in the same message.
//
// Extensions, used only when both ends agreed on the websocket upgrade
// (FeaturesHeader, Config.WithFeatures): stream reset (cmdRST = 5,
// Config.Reset) and a 64 KiB initial window (Config.InitialWindow).
//
// Errors: Stream.Read returns io.EOF only after the peer's FIN and all
// buffered data; after a reset it returns an error matching ErrReset; once
// the session is gone (Close, socket error, keepalive timeout, protocol
// error) every Read and Write returns one matching ErrSessionClosed. Without
// the reset extension a Write blocked after the peer's FIN fails with
// ErrReset after Config.StalledWriteTimeout.
//
// Flow control (window.go): every stream starts with the initial window and
// grows it, doubling, while its reader drains a window in under about two
// round trips (the RTT comes from websocket pings, Conn.RTT), up to
// Config.MaxStreamWindow, and only while the sum of the session's windows
// stays within Config.SessionBudget. A stream whose reader is slow or gone
// buffers at most its window; the session never stops reading the
// connection, so such streams cannot stall the others. A peer that sends
// past its window has that stream reset. Worst case, a session buffers
// SessionBudget + MaxStreams × InitialWindow bytes of unread data.
//
// Streams per session are capped (Config.MaxStreams) whichever side opens
// them: OpenStream past the cap fails with ErrStreamLimit, a peer's SYN past
// it is refused at once and counted (Session.RefusedStreams).
//
// Dead peers are detected twice: a NOP is sent every KeepAliveInterval and
// the session closes when nothing arrives for KeepAliveTimeout, and Conn
// arms a websocket read deadline whenever it waits for data, and a write
// deadline on every write.
//
// The package never logs; callers do.
package smux
