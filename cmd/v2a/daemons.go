package main

import (
	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/daemon"
)

// newDaemonCmds are the daemons of the wire and real worlds, one
// subcommand each (cmd/v2a/internal/daemon).
func newDaemonCmds() []*cobra.Command {
	var cs []*cobra.Command
	for _, d := range daemon.Daemons {
		cs = append(cs, daemon.Command(d))
	}
	return cs
}
