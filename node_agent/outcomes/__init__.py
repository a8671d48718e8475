"""Cost per outcome, the node's half: which repository, branch and commits each session worked
on (read from git, read-only) and the branch's pull request (from the forge's API). The
parsers are pure (`parse`, `match`); only `git` and `forge` do I/O."""
