// ner_span_classifier for the MiniLM BERT family (all precision policies).
#include "run.hpp"
namespace span_classifier {
SPAN_CLASSIFIER_INSTANTIATE(ctdl::bert::MiniLM)
}
