package mutate

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Mutate returns obj as it must be stored: rewritten for b when b is not nil,
// restored from the l5d-tunnel.io/ annotations when b is nil. It never
// modifies its argument; out is always a fresh copy. changed is false when
// the result equals obj (idempotence). Malformed input returns the object
// unchanged, changed=false, and warnings that say what is wrong (never the
// contents of a Secret); err is reserved for programming errors (nil object,
// a binding of another cluster, invalid Options).
//
// Rewriting an object that is already rewritten for b changes nothing. When
// the binding changed, the object is rewritten again from the recorded
// originals. A field whose value differs from the value recorded in
// AnnotationRewrittenValues was changed by someone else since, and its
// current value is taken as the new original. Restoring (b == nil) puts back
// every field that still holds the value Mutate wrote, and removes this
// package's annotations; an object without them is returned unchanged.
// ClusterIPs are not restored: the API server allocates new ones.
//
// Objects Classify calls KindNone are returned unchanged without warnings.
func Mutate(obj *unstructured.Unstructured, b *Binding, opts Options) (out *unstructured.Unstructured, changed bool, warnings []string, err error) {
	if obj == nil || obj.Object == nil {
		return nil, false, nil, ErrNilObject
	}
	kind, cluster := Classify(obj)
	if kind == KindNone {
		return obj.DeepCopy(), false, nil, nil
	}
	if b != nil && b.Cluster != "" && b.Cluster != cluster {
		return nil, false, nil, fmt.Errorf("%w: %s is of cluster %q, binding %s of cluster %q", ErrClusterMismatch, describe(kind, obj), cluster, b, b.Cluster)
	}
	if err := opts.Validate(); err != nil {
		return nil, false, nil, err
	}
	m := &mutation{kind: kind, obj: obj}
	out, changed, err = m.run(b, opts.withDefaults())
	if err != nil {
		m.warn(err.Error() + "; left unchanged")
		return obj.DeepCopy(), false, m.warnings, nil
	}
	return out, changed, m.warnings, nil
}

// mutation is one call of Mutate on an object of a kind it rewrites.
type mutation struct {
	kind     Kind
	obj      *unstructured.Unstructured
	warnings []string
}

func (m *mutation) warn(msg string) {
	m.warnings = append(m.warnings, describe(m.kind, m.obj)+": "+msg)
}

// run does the work of Mutate in four steps: read the record of earlier
// rewrites, fold a re-applied probe port, read the fields, and write what
// differs from the target. An error means obj is to be left unchanged.
func (m *mutation) run(b *Binding, opts Options) (*unstructured.Unstructured, bool, error) {
	if b != nil {
		if err := b.Validate(); err != nil {
			return nil, false, err
		}
	}
	out := m.obj.DeepCopy()
	ann, err := annotationsOf(out)
	if err != nil {
		return nil, false, err
	}
	st, warn := readState(ann)
	if warn != "" {
		m.warn(warn)
	}
	if b == nil && !st.marker {
		return out, false, nil
	}
	folded := m.kind == KindProbe && foldReappliedProbePort(out, st)
	r := newRewriter(m.kind)
	cur, err := r.read(out)
	if err != nil {
		return nil, false, err
	}
	target, newAnn, err := plan(r, st, cur, b, opts)
	if err != nil {
		return nil, false, err
	}
	diff := values{}
	for _, f := range r.fields() {
		if target[f.key] != cur[f.key] {
			diff[f.key] = target[f.key]
		}
	}
	if len(diff) > 0 {
		if err := r.write(out, diff); err != nil {
			return nil, false, err
		}
	}
	annChanged := !maps.Equal(ann, newAnn)
	if annChanged {
		setAnnotations(out, newAnn)
	}
	// Fields are written only when their text differs, and the annotations
	// only when they differ: the output differs from obj exactly then, or
	// when a port was folded (the tests check this against a deep
	// comparison).
	return out, len(diff) > 0 || annChanged || folded, nil
}

// plan returns the field values and the annotations the object must end
// with: the originals and none of this package's annotations when restoring
// (b == nil), the values for b and the record of originals and written values
// when rewriting.
func plan(r rewriter, st state, cur values, b *Binding, opts Options) (values, map[string]string, error) {
	orig := make(values, len(r.fields()))
	for _, f := range r.fields() {
		orig[f.key] = st.originalOf(f, cur[f.key])
	}
	ann := withoutOurs(st.ann)
	if b == nil {
		return orig, ann, nil
	}
	for _, f := range r.fields() {
		if !f.record {
			orig[f.key] = value{}
		}
	}
	target, err := r.tunnel(b, opts, orig)
	if err != nil {
		return nil, nil, err
	}
	ann[AnnotationRewrittenFor] = b.String()
	ann[AnnotationRewrittenValues] = target.encode()
	for _, f := range r.fields() {
		if v := orig[f.key]; f.record && v.ok {
			ann[AnnotationOriginalPrefix+f.key] = v.text
		}
	}
	return target, ann, nil
}

// setAnnotations replaces metadata.annotations of u; empty removes the field.
func setAnnotations(u *unstructured.Unstructured, ann map[string]string) {
	if len(ann) == 0 {
		unstructured.RemoveNestedField(u.Object, "metadata", "annotations")
	} else {
		u.SetAnnotations(ann)
	}
}

// describe names an object in warnings: "Link linkerd-multicluster/home".
func describe(kind Kind, obj *unstructured.Unstructured) string {
	what := map[Kind]string{KindProbe: "probe Service", KindLink: "Link", KindCredentials: "credentials Secret"}[kind]
	if what == "" {
		what = obj.GetKind()
	}
	return what + " " + obj.GetNamespace() + "/" + obj.GetName()
}

// value is one field's value as text; ok is false when the field is absent.
type value struct {
	text string
	ok   bool
}

func present(s string) value { return value{text: s, ok: true} }

// values maps field keys to values.
type values map[string]value

// encode renders the present values as the JSON of AnnotationRewrittenValues.
func (v values) encode() string {
	m := make(map[string]string, len(v))
	for k, x := range v {
		if x.ok {
			m[k] = x.text
		}
	}
	js, _ := json.Marshal(m) // a map of strings always marshals; keys are sorted
	return string(js)
}

// get returns the value of key, absent when missing.
func (v values) get(key string) value { return v[key] }

// field is one rewritten field of an object.
type field struct {
	key    string
	record bool // keep the original in an annotation and restore it
}

// rewriter knows where the rewritten fields of one kind live.
type rewriter interface {
	// fields lists the rewritten fields.
	fields() []field
	// read returns the current values, or an error that says what shape is
	// unexpected (never a Secret's contents). It does not modify u (it may
	// remember where the fields are, for write).
	read(u *unstructured.Unstructured) (values, error)
	// tunnel returns the values for binding b, given the original values.
	tunnel(b *Binding, opts Options, orig values) (values, error)
	// write sets the given values (absent: removes the field) in u, which
	// read saw. On error u may be half-written and is thrown away.
	write(u *unstructured.Unstructured, v values) error
}

func newRewriter(k Kind) rewriter {
	switch k {
	case KindProbe:
		return &probeRewriter{}
	case KindLink:
		return &linkRewriter{}
	default:
		return &credentialsRewriter{}
	}
}

// state is what the annotations say about earlier rewrites.
type state struct {
	marker  bool
	written values // nil when unknown
	ann     map[string]string
}

// original returns the recorded original of f (absent when not recorded).
func (s state) original(f field) value {
	if !f.record {
		return value{}
	}
	v, ok := s.ann[AnnotationOriginalPrefix+f.key]
	return value{text: v, ok: ok}
}

// originalOf returns what field f held before any rewrite, given its
// current value: the current value when the object is not rewritten or
// someone changed the field since Mutate wrote it, else the recorded original.
func (s state) originalOf(f field, cur value) value {
	if s.marker && (s.written == nil || cur == s.written.get(f.key)) {
		return s.original(f)
	}
	return cur
}

// readState reads the marker and the record of written values; the warning
// is not empty when the record is missing or corrupt.
func readState(ann map[string]string) (state, string) {
	st := state{ann: ann}
	_, st.marker = ann[AnnotationRewrittenFor]
	if !st.marker {
		return st, ""
	}
	raw, ok := ann[AnnotationRewrittenValues]
	var m map[string]string
	if !ok || json.Unmarshal([]byte(raw), &m) != nil || m == nil {
		return st, fmt.Sprintf("annotation %s is missing or not a JSON object of strings; trusting the recorded originals", AnnotationRewrittenValues)
	}
	st.written = make(values, len(m))
	for k, v := range m {
		st.written[k] = present(v)
	}
	return st, ""
}

// isOurs reports whether an annotation key is one Mutate manages.
func isOurs(key string) bool {
	return key == AnnotationRewrittenFor || key == AnnotationRewrittenValues || strings.HasPrefix(key, AnnotationOriginalPrefix)
}

func withoutOurs(ann map[string]string) map[string]string {
	out := make(map[string]string, len(ann)+8)
	for k, v := range ann {
		if !isOurs(k) {
			out[k] = v
		}
	}
	return out
}

// annotationsOf returns metadata.annotations; null or absent give an empty
// map, anything but a map of strings is an error.
func annotationsOf(u *unstructured.Unstructured) (map[string]string, error) {
	md, ok := u.Object["metadata"]
	if !ok || md == nil {
		return map[string]string{}, nil
	}
	m, ok := md.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("metadata is a %s, want an object", jsonType(md))
	}
	raw, ok := m["annotations"]
	if !ok || raw == nil {
		return map[string]string{}, nil
	}
	am, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("metadata.annotations is a %s, want an object", jsonType(raw))
	}
	out := make(map[string]string, len(am))
	for k, v := range am {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("metadata.annotations[%q] is a %s, want a string", k, jsonType(v))
		}
		out[k] = s
	}
	return out, nil
}

// jsonType names the JSON type of an unstructured value.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64, int32, int, float64, float32, json.Number:
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}
