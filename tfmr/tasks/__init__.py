"""Tasks: programs built on the library that train and evaluate a model for one job.

    symbols    the task layer: what every symbol-to-symbol task shares (SymbolTask, PairData)
    g2p        grapheme-to-phoneme on CMUdict (tfmr's main job; `tfmr g2p`); g2p_presets its config
    copytask   a synthetic task where copying matters: pointer-generator vs plain head (`tfmr experiment copytask`)
    finetune   LoRA / adapter fine-tuning of a trained checkpoint (`tfmr lm finetune`)

A task holds its data, its training and evaluation functions, its config class and its presets
(added to tfmr.presets' registry by the task itself); its command is in tfmr/cli/ (a symbol
task's flags come from the task layer).
Library modules never import from here.
"""
