// The chorus subcommands. Each parses its own options (argv[0] is the
// subcommand name) and returns the process exit code; errors are thrown as
// chorus::Error and reported by main.
#pragma once

#include "dist/runtime.h"

namespace chorus::apps {

int cmd_train_tokenizer(int argc, char** argv, dist::Runtime& rt);
int cmd_add_language(int argc, char** argv, dist::Runtime& rt);
int cmd_prepare_text(int argc, char** argv, dist::Runtime& rt);
int cmd_prepare_speech(int argc, char** argv, dist::Runtime& rt);
int cmd_pretrain(int argc, char** argv, dist::Runtime& rt);
int cmd_finetune_speech(int argc, char** argv, dist::Runtime& rt);
int cmd_transcribe(int argc, char** argv, dist::Runtime& rt);
int cmd_evaluate(int argc, char** argv, dist::Runtime& rt);
int cmd_generate(int argc, char** argv, dist::Runtime& rt);
int cmd_checkpoint(int argc, char** argv, dist::Runtime& rt);
int cmd_plan(int argc, char** argv, dist::Runtime& rt);
int cmd_quantize(int argc, char** argv, dist::Runtime& rt);

// Refuses to run a single-process tool on more than one rank.
void require_single_process(dist::Runtime& rt, const char* command);

}  // namespace chorus::apps
