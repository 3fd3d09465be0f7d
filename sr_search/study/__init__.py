"""The study layer: study and search-space files read (`yamlfile`, `space_file`), validated into typed, frozen objects
(`model`, `settings`, `protocols`, `space`, `domain`, `grid`), checked across files (`checks`, `config`), and what makes
the trials of a study comparable (`identity`)."""
