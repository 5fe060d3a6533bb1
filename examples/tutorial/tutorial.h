/* tutorial.h - the chat consumer built step by step in docs/tutorial.md. */
#ifndef CCH_TUTORIAL_H
#define CCH_TUTORIAL_H

#include <cchannels/cchannels.h>

/* The chat consumer: route it at "/ws/chat/{room}/". */
extern const cch_consumer_class tutorial_chat;

#endif
