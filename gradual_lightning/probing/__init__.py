"""SliCK probing: prompts, generation engine, matching, mastery categories, runner."""
