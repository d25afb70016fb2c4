// Command render owns dist/*.yaml: `make manifests` runs it to render the
// charts of package manifests with the example values in values/. Only the
// Makefile and this package's tests use it.
package main
