package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/harness"
)

// newHelpCmd replaces cobra's help: `v2a help` prints the CLI's usage and
// then the scenario script commands from the harness's one command table;
// `v2a help --markdown` prints only that table as the README has it (a
// test keeps the two equal); `v2a help run` is the help of `run`.
func newHelpCmd(root *cobra.Command) *cobra.Command {
	var markdown bool
	c := &cobra.Command{
		Use:   "help [COMMAND] [--markdown]",
		Short: "Help about a command, and the scenario script commands",
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if markdown {
				fmt.Fprint(w, harness.CommandTable(true))
				return nil
			}
			if len(args) > 0 {
				sub, _, err := root.Find(args)
				if err != nil || sub == root {
					return fmt.Errorf("help: no command %q", args[0])
				}
				return sub.Help()
			}
			if err := root.Usage(); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nScenario script commands (.scn files: `v2a run FILE`, harness.RunScenario):\n\n%s", harness.CommandTable(false))
			return nil
		},
	}
	c.Flags().BoolVar(&markdown, "markdown", false, "print only the script command table, as the README has it")
	return c
}
