package mutate

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// kubeconfigDoc edits the cluster entry of a kubeconfig in its bytes: the
// document tree (go.yaml.in/yaml/v3) says where the keys and values are,
// and only the bytes of the values that change are replaced, so comments,
// key order, indentation, quoting, line endings, flow (JSON) style and
// every field client-go does not know stay as they were.
//
// Plain scalars on one line and quoted scalars are edited in place; an
// alias, a tag, an anchor, a block scalar (| or >) or a multi-line plain
// scalar where an edit has to happen makes edit fail (errNotInPlace). The
// caller checks the result with client-go.
type kubeconfigDoc struct {
	src     []byte
	lines   []int      // byte offset of each line's start, as the YAML scanner counts lines
	cluster *yaml.Node // the mapping of the cluster entry, nil when there is none
	flow    bool       // cluster is a flow mapping ({...}, as in JSON)
}

var errNotInPlace = errors.New("not editable in place")

// parseKubeconfigDoc parses src and finds the mapping of the cluster entry
// named clusterName (the last one, as client-go reads duplicates).
func parseKubeconfigDoc(src []byte, clusterName string) (*kubeconfigDoc, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, errNotInPlace // never quoted: the error may hold pieces of the Secret
	}
	d := &kubeconfigDoc{src: src, lines: lineStarts(src)}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return d, nil
	}
	_, clusters := mapEntry(deref(doc.Content[0]), "clusters")
	clusters = deref(clusters)
	if clusters == nil || clusters.Kind != yaml.SequenceNode {
		return d, nil
	}
	for _, item := range clusters.Content {
		item = deref(item)
		_, name := mapEntry(item, "name")
		if name = deref(name); name == nil || name.Kind != yaml.ScalarNode || name.Value != clusterName {
			continue
		}
		_, m := mapEntry(item, "cluster")
		d.cluster = nil
		if m != nil && m.Kind == yaml.MappingNode {
			d.cluster = m
			d.flow = m.Style&yaml.FlowStyle != 0
		}
	}
	return d, nil
}

// deref follows an alias.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// mapEntry returns the last key and value nodes of key in mapping m.
func mapEntry(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if c := m.Content[i]; c.Kind == yaml.ScalarNode && c.Value == key {
			k, v = c, m.Content[i+1]
		}
	}
	return k, v
}

// emptyString reports whether the cluster entry has key with a quoted empty
// string (which client-go reads as if the key were absent).
func (d *kubeconfigDoc) emptyString(key string) bool {
	_, v := mapEntry(d.cluster, key)
	return v != nil && v.Kind == yaml.ScalarNode && v.Tag == "!!str" && v.Value == ""
}

// lineStarts returns the byte offset of every line, counting line breaks
// as the YAML scanner does (CR LF, LF, CR, NEL, LS, PS). A UTF-8 byte order
// mark is not part of the first line's columns.
func lineStarts(src []byte) []int {
	first := 0
	if bytes.HasPrefix(src, []byte("\xEF\xBB\xBF")) {
		first = 3
	}
	out := []int{first}
	for i := first; i < len(src); {
		switch {
		case src[i] == '\r' && i+1 < len(src) && src[i+1] == '\n':
			i += 2
		case src[i] == '\r' || src[i] == '\n':
			i++
		case src[i] == 0xC2 && i+1 < len(src) && src[i+1] == 0x85:
			i += 2
		case src[i] == 0xE2 && i+2 < len(src) && src[i+1] == 0x80 && (src[i+2] == 0xA8 || src[i+2] == 0xA9):
			i += 3
		default:
			i++
			continue
		}
		out = append(out, i)
	}
	return out
}

// offset converts a node's line and column (counted in characters) to a
// byte offset.
func (d *kubeconfigDoc) offset(n *yaml.Node) (int, bool) {
	if n.Line < 1 || n.Line > len(d.lines) || n.Column < 1 {
		return 0, false
	}
	off := d.lines[n.Line-1]
	for c := 1; c < n.Column; c++ {
		if off >= len(d.src) || d.src[off] == '\n' || d.src[off] == '\r' {
			return 0, false
		}
		_, w := utf8.DecodeRune(d.src[off:])
		off += w
	}
	return off, true
}

// span returns the bytes [start, end) of a scalar node: a plain scalar on
// one line or a quoted scalar. Anything else (alias, anchor, tag, block
// scalar, multi-line plain scalar, a position that does not match) fails.
func (d *kubeconfigDoc) span(n *yaml.Node) (start, end int, ok bool) {
	if n == nil || n.Kind != yaml.ScalarNode || n.Anchor != "" {
		return 0, 0, false
	}
	start, ok = d.offset(n)
	if !ok {
		return 0, 0, false
	}
	src := d.src
	switch n.Style {
	case 0:
		end = start + len(n.Value)
		if n.Value == "" || end > len(src) || string(src[start:end]) != n.Value || strings.ContainsAny(n.Value, "\r\n") {
			return 0, 0, false
		}
		return start, end, true
	case yaml.DoubleQuotedStyle:
		if start >= len(src) || src[start] != '"' {
			return 0, 0, false
		}
		for i := start + 1; i < len(src); i++ {
			switch src[i] {
			case '\\':
				i++
			case '"':
				return start, i + 1, true
			}
		}
	case yaml.SingleQuotedStyle:
		if start >= len(src) || src[start] != '\'' {
			return 0, 0, false
		}
		for i := start + 1; i < len(src); i++ {
			if src[i] == '\'' {
				if i+1 < len(src) && src[i+1] == '\'' {
					i++
					continue
				}
				return start, i + 1, true
			}
		}
	}
	return 0, 0, false
}

// splice is one replacement of the bytes [start, end).
type splice struct {
	start, end int
	text       string
}

// applySplices returns src with the edits applied; they must not overlap.
func applySplices(src []byte, edits []splice) ([]byte, bool) {
	// At most a handful of edits: sort by start, insertion sort.
	for i := 1; i < len(edits); i++ {
		for j := i; j > 0 && edits[j].start < edits[j-1].start; j-- {
			edits[j], edits[j-1] = edits[j-1], edits[j]
		}
	}
	n := len(src)
	for i, e := range edits {
		if e.start < 0 || e.end < e.start || e.end > len(src) || (i > 0 && edits[i-1].end > e.start) {
			return nil, false
		}
		n += len(e.text) - (e.end - e.start)
	}
	out := make([]byte, 0, n)
	pos := 0
	for _, e := range edits {
		out = append(out, src[pos:e.start]...)
		out = append(out, e.text...)
		pos = e.end
	}
	return append(out, src[pos:]...), true
}

// edit sets (present) or removes (absent) the given keys of the cluster
// entry. A value keeps the quoting of the value it replaces; an inserted
// entry copies the key quoting, separator, indentation or flow spacing and
// value quoting of its neighbour (after server, before tls-server-name, as
// client-go orders them). Bit i of quote forces set[i] double-quoted.
func (d *kubeconfigDoc) edit(set []keyValue, quote uint) ([]byte, error) {
	if d.cluster == nil {
		return nil, errNotInPlace
	}
	var edits []splice
	for i, kv := range set {
		k, v := mapEntry(d.cluster, kv.key)
		quote := quote&(1<<i) != 0
		var e []splice
		var err error
		switch {
		case k != nil && kv.v.ok:
			e, err = d.replace(k, v, kv.v.text, quote)
		case k != nil:
			e, err = d.remove(k, v)
		case kv.v.ok:
			e, err = d.insert(kv.key, kv.v.text, quote)
		}
		if err != nil {
			return nil, err
		}
		edits = append(edits, e...)
	}
	out, ok := applySplices(d.src, edits)
	if !ok {
		return nil, errNotInPlace
	}
	return out, nil
}

// keyValue is one key of the cluster entry to set or remove.
type keyValue struct {
	key string
	v   value
}

// replace replaces the value of an entry, keeping its quoting.
func (d *kubeconfigDoc) replace(k, v *yaml.Node, text string, quote bool) ([]splice, error) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" && v.Value == "" && v.Style == 0 && !d.flow {
		// "key:" with nothing after it: write the value after the colon.
		_, kEnd, ok := d.span(k)
		if !ok {
			return nil, errNotInPlace
		}
		i := skipBlanks(d.src, kEnd)
		if i >= len(d.src) || d.src[i] != ':' {
			return nil, errNotInPlace
		}
		return []splice{{i + 1, i + 1, " " + d.scalar(text, 0, quote)}}, nil
	}
	start, end, ok := d.span(v)
	if !ok {
		return nil, errNotInPlace
	}
	return []splice{{start, end, d.scalar(text, v.Style, quote)}}, nil
}

// insert adds key after server or before tls-server-name, whichever exists.
func (d *kubeconfigDoc) insert(key, text string, quote bool) ([]splice, error) {
	after := key != FieldServer
	neighbour := FieldServer
	if !after {
		neighbour = FieldTLSServerName
	}
	ka, va := mapEntry(d.cluster, neighbour)
	if ka == nil {
		return nil, errNotInPlace
	}
	kStart, kEnd, ok1 := d.span(ka)
	vStart, vEnd, ok2 := d.span(va)
	if !ok1 || !ok2 {
		return nil, errNotInPlace
	}
	sep := string(d.src[kEnd:vStart])
	if strings.Trim(sep, " ") != ":" {
		sep = ": "
	}
	entry := d.scalar(key, ka.Style, false) + sep + d.scalar(text, va.Style, quote)
	if d.flow {
		if after {
			ws, ok := d.flowGap(kStart, vEnd)
			if !ok {
				return nil, errNotInPlace
			}
			return []splice{{vEnd, vEnd, "," + ws + entry}}, nil
		}
		ls := skipSpaceBack(d.src, kStart)
		if ls == 0 || (d.src[ls-1] != ',' && d.src[ls-1] != '{') {
			return nil, errNotInPlace
		}
		return []splice{{kStart, kStart, entry + "," + string(d.src[ls:kStart])}}, nil
	}
	ls, ok := d.lineStart(kStart)
	if !ok {
		return nil, errNotInPlace
	}
	indent := string(d.src[ls:kStart])
	le, brk, ok := d.lineEnd(vEnd)
	if !ok {
		return nil, errNotInPlace
	}
	switch {
	case !after:
		if brk == "" {
			brk = d.lineBreak()
		}
		return []splice{{ls, ls, indent + entry + brk}}, nil
	case brk == "": // the last line, without a final line break
		return []splice{{le, le, d.lineBreak() + indent + entry}}, nil
	default:
		return []splice{{le, le, indent + entry + brk}}, nil
	}
}

// remove deletes an entry: its lines in block style, the entry and one
// comma in flow style (the inverse of insert).
func (d *kubeconfigDoc) remove(k, v *yaml.Node) ([]splice, error) {
	kStart, _, ok1 := d.span(k)
	_, vEnd, ok2 := d.span(v)
	if !ok1 || !ok2 {
		return nil, errNotInPlace
	}
	if d.flow {
		if b := skipSpaceBack(d.src, kStart); b > 0 && d.src[b-1] == ',' {
			return []splice{{b - 1, vEnd, ""}}, nil
		} else if b == 0 || d.src[b-1] != '{' {
			return nil, errNotInPlace
		}
		i := skipSpace(d.src, vEnd)
		if i < len(d.src) && d.src[i] == ',' {
			return []splice{{kStart, skipSpace(d.src, i+1), ""}}, nil
		}
		return []splice{{kStart, vEnd, ""}}, nil
	}
	ls, ok := d.lineStart(kStart)
	if !ok {
		return nil, errNotInPlace
	}
	le, brk, ok := d.lineEnd(vEnd)
	if !ok {
		return nil, errNotInPlace
	}
	if brk != "" || ls == 0 {
		return []splice{{ls, le, ""}}, nil
	}
	// The last line, without a final line break: take the break before it.
	from := ls - 1
	if from > 0 && d.src[from] == '\n' && d.src[from-1] == '\r' {
		from--
	}
	return []splice{{from, le, ""}}, nil
}

// flowGap returns the white space that separates entries of the flow
// mapping around the entry [kStart, vEnd): after its comma, else before it.
func (d *kubeconfigDoc) flowGap(kStart, vEnd int) (string, bool) {
	if i := skipSpace(d.src, vEnd); i < len(d.src) && d.src[i] == ',' {
		j := skipSpace(d.src, i+1)
		if j < len(d.src) && d.src[j] != '#' {
			return string(d.src[i+1 : j]), true
		}
		return " ", true
	}
	b := skipSpaceBack(d.src, kStart)
	if b > 0 && (d.src[b-1] == ',' || d.src[b-1] == '{') {
		return string(d.src[b:kStart]), true
	}
	return "", false
}

// lineStart returns the start of the line of off, which only spaces may
// precede (a block mapping key).
func (d *kubeconfigDoc) lineStart(off int) (int, bool) {
	i := off
	for i > 0 && d.src[i-1] == ' ' {
		i--
	}
	return i, i == 0 || d.src[i-1] == '\n' || d.src[i-1] == '\r'
}

// lineEnd returns the offset after the line break that ends the line of
// off, and the break ("" at the end of the input). Only blanks and a
// comment may follow off.
func (d *kubeconfigDoc) lineEnd(off int) (int, string, bool) {
	i := skipBlanks(d.src, off)
	if i > off && i < len(d.src) && d.src[i] == '#' {
		for i < len(d.src) && d.src[i] != '\n' && d.src[i] != '\r' {
			i++
		}
	}
	switch {
	case i == len(d.src):
		return i, "", true
	case d.src[i] == '\r' && i+1 < len(d.src) && d.src[i+1] == '\n':
		return i + 2, "\r\n", true
	case d.src[i] == '\n':
		return i + 1, "\n", true
	}
	return 0, "", false
}

// lineBreak is the line break the document uses.
func (d *kubeconfigDoc) lineBreak() string {
	if bytes.Contains(d.src, []byte("\r\n")) {
		return "\r\n"
	}
	return "\n"
}

func skipBlanks(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func skipSpaceBack(b []byte, i int) int {
	for i > 0 && (b[i-1] == ' ' || b[i-1] == '\t' || b[i-1] == '\n' || b[i-1] == '\r') {
		i--
	}
	return i
}

// scalar renders s in the given style when that style can hold it (plain
// only for text that stays one plain string in this context), else
// double-quoted as in JSON, which YAML reads alike.
func (d *kubeconfigDoc) scalar(s string, style yaml.Style, quote bool) string {
	if !quote {
		switch style {
		case 0:
			if plainSafe(s, d.flow) {
				return s
			}
		case yaml.SingleQuotedStyle:
			if printable(s) {
				return "'" + strings.ReplaceAll(s, "'", "''") + "'"
			}
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// plainSafe reports whether s reads back as the same string when written
// as a plain scalar value (YAML 1.1 types such as numbers and booleans are
// left to the check of the caller, which loads the result with client-go).
func plainSafe(s string, flow bool) bool {
	if s == "" || !printable(s) || strings.ContainsAny(s[:1], "-?:,[]{}#&*!|>'\"%@` ") ||
		strings.HasSuffix(s, " ") || strings.HasSuffix(s, ":") ||
		strings.Contains(s, ": ") || strings.Contains(s, " #") || strings.ContainsRune(s, '\t') {
		return false
	}
	return !flow || !strings.ContainsAny(s, ",[]{}")
}

// printable reports whether s is one line of printable characters.
func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || r == '\uFEFF' || (!unicode.IsPrint(r) && r != ' ') {
			return false
		}
	}
	return true
}
