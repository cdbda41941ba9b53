package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/v2a-dr/v2a/impl/wire"
)

// TestReadFrame: frames below and above frameUpfront (read into an exact
// buffer, or a growing one) come back whole and in order; a stream cut
// between frames is io.EOF, one cut inside a header or a payload is
// wire.ErrShort saying how far it got.
func TestReadFrame(t *testing.T) {
	small := frame("small", 1)
	large := frame(strings.Repeat("x", frameUpfront+1<<20), 2) // takes the growing path
	if len(large) <= frameUpfront {
		t.Fatalf("large frame of %d bytes is not above frameUpfront", len(large))
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, c := range []struct {
		name    string
		stream  []byte
		frames  [][]byte // read whole, in order, before the error
		err     error
		errText string
	}{
		{"small then large", cat(small, large), [][]byte{small, large}, io.EOF, ""},
		{"large then small", cat(large, small), [][]byte{large, small}, io.EOF, ""},
		{"empty stream", nil, nil, io.EOF, ""},
		{"cut in a header", cat(small, large[:4]), [][]byte{small}, wire.ErrShort, "inside a header"},
		{"cut in a small payload", small[:len(small)-1], nil, wire.ErrShort, fmt.Sprintf("after %d of %d bytes", len(small)-1, len(small))},
		{"cut in a large payload", cat(small, large[:frameUpfront+100]), [][]byte{small}, wire.ErrShort, fmt.Sprintf("after %d of %d bytes", frameUpfront+100, len(large))},
	} {
		t.Run(c.name, func(t *testing.T) {
			br := bufio.NewReader(bytes.NewReader(c.stream))
			for i, want := range c.frames {
				k, got, err := readFrame(br)
				if err != nil || k != kindTestMsg || !bytes.Equal(got, want) {
					t.Fatalf("frame %d: kind %v, %d bytes (want %d), err %v", i, k, len(got), len(want), err)
				}
			}
			_, _, err := readFrame(br)
			if !errors.Is(err, c.err) || !strings.Contains(errText(err), c.errText) {
				t.Fatalf("end: err %v, want %v containing %q", err, c.err, c.errText)
			}
		})
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
