// Package tunnel is the runtime behind `tunnel server` and `tunnel client`:
// listeners, the client-session registry, upstream dialing, the admin HTTP
// endpoints (/healthz, /readyz, /metrics), the reconnect loop and graceful
// drain. The wire format lives in pkg/smux. Only cmd/tunnel imports it.
//
// Server: owns the named TCP listeners. Each accepted connection becomes a
// stream on the newest live client session, opened with a header naming the
// listener. With no client session a connection is closed at once.
//
// Client: dials the server's websocket endpoint, keeps one smux session,
// and for each stream maps the listener name to the upstream it was
// configured with. It never dials an address that came over the wire.
//
// After the header the client answers with one status byte (pkg/smux
// Reply) so the server can tell "connected" from "refused" and close the
// caller's connection at once instead of leaving it half-open.
package tunnel
