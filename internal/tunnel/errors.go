package tunnel

import "errors"

// Sentinel errors.
var (
	// ErrConfig wraps every configuration problem (a *FieldError names the field).
	ErrConfig = errors.New("invalid configuration")
	// ErrUnauthorized means the server rejected the client's token (HTTP 401).
	ErrUnauthorized = errors.New("server rejected the token (HTTP 401)")
	// ErrNoToken means neither a token file nor TUNNEL_TOKEN gave a token.
	ErrNoToken = errors.New("no token configured")
	// ErrAlreadyStarted means Start was called twice.
	ErrAlreadyStarted = errors.New("already started")
)
