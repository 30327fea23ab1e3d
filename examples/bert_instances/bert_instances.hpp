#pragma once
// The BERT encoders of the compiled shape families (the static ones and the runtime-shaped
// Dynamic), instantiated once and shared by the
// project's programs (ner_span_classifier, bert_bench).
//
// BertModel<float, F, P>::forward (with the backward of every op it records) is more than
// half of the code a program generates for one family (measured with -ftime-report:
// 67 s of 125 s CPU for Tiny's three policies at -O3). Declaring its instantiations
// extern here keeps each program's translation units from generating it again; the
// definitions live in one generated unit per family (bert_instances/bert_<Family>.cpp, from
// bert_instance.cpp.in), the object library ctdl_bert_<Family> that a program links
// for each family it dispatches to.
#include <ctdl/models/bert/model.hpp>
#include <ctdl/precision/policy.hpp>

#define CTDL_BERT_INSTANCES(Keyword, F)                                                          \
  Keyword template struct ctdl::bert::BertModel<float, ctdl::bert::F, ctdl::precision::Fp32>;      \
  Keyword template struct ctdl::bert::BertModel<float, ctdl::bert::F, ctdl::precision::Bf16Mixed>; \
  Keyword template struct ctdl::bert::BertModel<float, ctdl::bert::F, ctdl::precision::Fp16Mixed>;

CTDL_BERT_INSTANCES(extern, Tiny)
CTDL_BERT_INSTANCES(extern, Mini)
CTDL_BERT_INSTANCES(extern, MiniLM)
CTDL_BERT_INSTANCES(extern, Small)
CTDL_BERT_INSTANCES(extern, Base)
CTDL_BERT_INSTANCES(extern, Large)
CTDL_BERT_INSTANCES(extern, Dynamic)
