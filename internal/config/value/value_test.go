package value

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// A scalar that does not parse decodes without failing the document, keeping
// its text, the reason and the line, so config.Validate can name the field;
// anything but a scalar is a decoding error naming the line.
func TestDecode(t *testing.T) {
	var v struct {
		A HostPort `yaml:"a"`
		B Prefix   `yaml:"b"`
		C URL      `yaml:"c"`
		D HostPort `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("a: 127.0.0.1\nb: 10.0.0.1/8\nc: /keys\nd: ~\n"), &v); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		err  error
		line int
		text string
		want string
	}{
		{"a", v.A.Err(), v.A.Line(), v.A.String(), "missing port"},
		{"b", v.B.Err(), v.B.Line(), v.B.String(), "host bits set (did you mean 10.0.0.0/8?)"},
		{"c", v.C.Err(), v.C.Line(), v.C.String(), "not an absolute URL"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, c.err, c.want)
		}
		if c.line == 0 || c.text == "" {
			t.Errorf("%s: line %d, text %q", c.name, c.line, c.text)
		}
	}
	if !v.D.IsZero() || v.D.Err() != nil {
		t.Errorf("null address: %+v", v.D)
	}
	err := yaml.Unmarshal([]byte("a: ok\nb: [10.0.0.0/8]\n"), &v)
	if err == nil || !strings.Contains(err.Error(), "line 2: want a string, not a list") {
		t.Errorf("list for a prefix: %v", err)
	}
}

func TestHostPort(t *testing.T) {
	for _, s := range []string{"127.0.0.1:80", "[::1]:443", "example.com:8080"} {
		hp, err := ParseHostPort(s)
		if err != nil || hp.String() != s {
			t.Errorf("%s: %q %v", s, hp, err)
		}
	}
	for _, s := range []string{"", ":80", "host", "host:0x50", "host:65536", "host:+80", "host:080"} {
		if _, err := parseHostPort(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if hp := MustHostPort("10.1.2.3:9"); !hp.IsIP() || hp.Host() != "10.1.2.3" {
		t.Errorf("IP literal: %+v", hp)
	}
	if hp := MustHostPort("db.internal:5432"); hp.IsIP() {
		t.Errorf("host name taken for an IP: %+v", hp)
	}
}
