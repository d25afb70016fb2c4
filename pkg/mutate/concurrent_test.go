package mutate

import (
	"reflect"
	"sync"
	"testing"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
)

// TestConcurrentMutate runs Mutate on the same shared objects from several
// goroutines, as the webhook and the reconciler do on objects from a shared
// cache (run with -race to check that the input is only read).
func TestConcurrentMutate(t *testing.T) {
	objs, err := fixtures.Objects(fixtures.Newest(), "link.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := testBinding()
	before := make([]map[string]any, len(objs))
	for i, o := range objs {
		before[i] = o.DeepCopy().Object
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				for _, o := range objs {
					bb := b
					if (g+i)%2 == 1 {
						bb = nil
					}
					out, _, _, err := Mutate(o, bb, Options{})
					if err != nil {
						errs <- err
						return
					}
					if _, _, _, err := Mutate(out, nil, Options{}); err != nil {
						errs <- err
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, o := range objs {
		if !reflect.DeepEqual(before[i], o.Object) {
			t.Errorf("shared input %s %s was modified", o.GetKind(), o.GetName())
		}
	}
}
