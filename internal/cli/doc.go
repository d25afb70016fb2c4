// Package cli holds the command-line conventions every binary shares: exit
// codes, the stamped version, logging setup and common flag validation.
// It imports only the standard library; cmd/* and the runtimes' flag layers use it.
package cli
