package mutate

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Options are the cluster-wide settings of the rewrite.
type Options struct {
	// ClusterDomain builds Service FQDNs; default "cluster.local".
	ClusterDomain string
	// DefaultTLSServerName is used for the credentials kubeconfig when the
	// original server already pointed at the tunnel; default
	// "kubernetes.default.svc".
	DefaultTLSServerName string
}

// Defaults of Options.
const (
	DefaultClusterDomain = "cluster.local"
	DefaultTLSServerName = "kubernetes.default.svc"
)

// Sentinel errors. Wrapped errors say which object or Service is concerned.
var (
	// ErrNilObject is returned by Mutate for a nil object.
	ErrNilObject = errors.New("nil object")
	// ErrClusterMismatch is returned by Mutate when the binding belongs to
	// another cluster than the object (a caller bug).
	ErrClusterMismatch = errors.New("binding is for another cluster")
	// ErrInvalidOptions is returned by Options.Validate.
	ErrInvalidOptions = errors.New("invalid options")
	// ErrInvalidBinding wraps what is wrong with a binding.
	ErrInvalidBinding = errors.New("invalid tunnel binding")
	// ErrAmbiguousBinding is returned by FindBinding when trusted Services
	// describe more than one binding for a cluster.
	ErrAmbiguousBinding = errors.New("ambiguous tunnel binding")
	// ErrIncompleteBinding is returned by FindBinding when a trusted binding
	// lacks a Service or a named port.
	ErrIncompleteBinding = errors.New("incomplete tunnel binding")
	// ErrUntrustedBinding is returned by FindBinding when the only Services
	// labelled for the cluster are in namespaces that are not trusted. There
	// is no usable binding: callers treat it like "no binding" and log it.
	ErrUntrustedBinding = errors.New("tunnel binding in untrusted namespace ignored")
)

// DefaultOptions returns the Options of a default installation.
func DefaultOptions() Options {
	return Options{ClusterDomain: DefaultClusterDomain, DefaultTLSServerName: DefaultTLSServerName}
}

// Validate checks that ClusterDomain is a DNS name and DefaultTLSServerName a
// DNS name or an IP address; empty fields are valid (Mutate uses the
// defaults for them).
func (o Options) Validate() error {
	if o.ClusterDomain != "" {
		if errs := validation.IsDNS1123Subdomain(strings.TrimSuffix(o.ClusterDomain, ".")); len(errs) > 0 {
			return fmt.Errorf("%w: cluster domain %q: %s", ErrInvalidOptions, o.ClusterDomain, strings.Join(errs, "; "))
		}
	}
	if o.DefaultTLSServerName != "" && net.ParseIP(o.DefaultTLSServerName) == nil {
		if errs := validation.IsDNS1123Subdomain(o.DefaultTLSServerName); len(errs) > 0 {
			return fmt.Errorf("%w: default TLS server name %q: %s", ErrInvalidOptions, o.DefaultTLSServerName, strings.Join(errs, "; "))
		}
	}
	return nil
}

// withDefaults fills empty fields with the defaults.
func (o Options) withDefaults() Options {
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	o.ClusterDomain = strings.TrimSuffix(o.ClusterDomain, ".")
	if o.DefaultTLSServerName == "" {
		o.DefaultTLSServerName = DefaultTLSServerName
	}
	return o
}
