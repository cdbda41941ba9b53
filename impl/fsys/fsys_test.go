package fsys_test

import (
	"testing"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/fsys/fsystest"
)

func TestOSConformance(t *testing.T) {
	fsystest.Run(t, func(t *testing.T) (fsys.FS, string) { return fsys.OS{}, t.TempDir() })
}
